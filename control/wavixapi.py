"""The Wavix REST calls callrec makes (httpx), with retries as data.

=================  ===============================================  ==========================
operation          request                                          answer used
=================  ===============================================  ==========================
``start_stream``   ``POST /v1/calls/{id}/streams``                  ``stream_id``
                   ``{stream_url, stream_type, stream_channel}``
``stop_stream``    ``DELETE /v1/calls/{id}/streams/{stream_id}``    status only
``get_call``       ``GET /v1/calls/{id}``                           ``call`` (confirmation)
=================  ===============================================  ==========================

The base URL, the path style (``/v1/call/`` on older Wavix pages) and the auth style
(Bearer or ``?appid=``) are settings. A 4xx answer raises :class:`WavixRejected` at once
(an outcome, never retried); a 5xx, a timeout or a connection error is retried with
doubling back-off up to ``max_attempts``, then raises :class:`WavixUnavailable`. The API
key is never logged (httpx logs URLs at DEBUG: with ``?appid=`` its logger is silenced).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from control import metrics
from control.errors import WavixRejected, WavixUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WavixConfig:
    base_url: str
    api_key: str
    auth_style: str = "bearer"
    path_style: str = "calls"
    timeout_s: float = 5.0
    max_attempts: int = 5
    backoff_s: float = 0.2


class WavixClient:
    """One connection pool to Wavix's REST API."""

    def __init__(
        self, config: WavixConfig, on_send: Callable[[str, str], None] | None = None
    ) -> None:
        self.config = config
        headers = {"Accept": "application/json"}
        params: dict[str, str] = {}
        if config.auth_style == "bearer":
            headers["Authorization"] = f"Bearer {config.api_key}"
        else:
            params["appid"] = config.api_key
            logging.getLogger("httpx").setLevel(logging.WARNING)
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            params=params,
            timeout=config.timeout_s,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )
        self.on_send = on_send
        """Called with (operation, call id) as each request is sent (latency metric)."""

    async def close(self) -> None:
        await self._client.aclose()

    def _path(self, call_id: str, *rest: str) -> str:
        parts = "/".join(quote(p, safe="") for p in (call_id, *rest))
        return f"/v1/{self.config.path_style}/{parts}"

    async def start_stream(
        self, call_id: str, stream_url: str, *, channel: str, stream_type: str = "oneway"
    ) -> str:
        """Start a stream; returns Wavix's ``stream_id``."""
        body = {"stream_url": stream_url, "stream_type": stream_type, "stream_channel": channel}
        data = await self._request(
            "start_stream", call_id, "POST", self._path(call_id, "streams"), body
        )
        stream_id = data.get("stream_id") if isinstance(data, dict) else None
        if not isinstance(stream_id, str) or not stream_id:
            raise WavixRejected("stream started but no stream_id in the answer", 200)
        return stream_id

    async def stop_stream(self, call_id: str, stream_id: str) -> None:
        await self._request(
            "stop_stream", call_id, "DELETE", self._path(call_id, "streams", stream_id)
        )

    async def get_call(self, call_id: str) -> dict[str, Any]:
        data = await self._request("get_call", call_id, "GET", self._path(call_id))
        call = data.get("call") if isinstance(data, dict) else None
        return call if isinstance(call, dict) else {}

    async def _request(
        self,
        operation: str,
        call_id: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
    ) -> Any:
        return await retrying(
            lambda: self._once(operation, call_id, method, path, body),
            attempts=self.config.max_attempts,
            backoff_s=self.config.backoff_s,
            what=f"call_id={call_id} {operation}",
        )

    async def _once(
        self, operation: str, call_id: str, method: str, path: str, body: dict[str, Any] | None
    ) -> Any:
        if self.on_send is not None:
            self.on_send(operation, call_id)
        try:
            resp = await self._client.request(method, path, json=body)
        except httpx.TimeoutException:
            metrics.WAVIX_REQUESTS.labels(operation, "timeout").inc()
            raise WavixUnavailable(f"{operation}: timed out") from None
        except httpx.HTTPError as exc:
            metrics.WAVIX_REQUESTS.labels(operation, "error").inc()
            raise WavixUnavailable(f"{operation}: {type(exc).__name__}") from None
        metrics.WAVIX_REQUESTS.labels(operation, str(resp.status_code)).inc()
        if resp.status_code >= 500:
            raise WavixUnavailable(f"{operation}: HTTP {resp.status_code}", resp.status_code)
        if resp.status_code >= 400:
            raise WavixRejected(f"{resp.status_code} {_detail(resp)}", resp.status_code)
        try:
            return resp.json()
        except ValueError:
            return {}


def _detail(resp: httpx.Response) -> str:
    """Wavix's error text (``message``/``error``), bounded and on one line."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    text = ""
    if isinstance(data, dict):
        text = str(data.get("message") or data.get("error") or "")
    text = text or resp.reason_phrase or ""
    return " ".join(text.split())[:200]


async def retrying(
    attempt: Callable[[], Awaitable[Any]], *, attempts: int, backoff_s: float, what: str
) -> Any:
    """``attempt()`` until it succeeds, raises a non-retriable error or ``attempts`` ran out."""
    delay = backoff_s
    for n in range(1, attempts + 1):
        try:
            return await attempt()
        except WavixUnavailable as exc:
            if n == attempts:
                raise
            log.warning("%s: %s; retry %d/%d in %.1fs", what, exc, n, attempts - 1, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")
