"""The review console's web app: the pages of console/*.py behind one Starlette app.

Pages (server-rendered, Jinja2 with autoescaping, no inline script; docs/console.md)::

    GET  /calls[.csv]                    search, sort, keyset pages; the same view as CSV
    GET  /calls/<rec>                    call page: waveform, player, transcript, metrics,
                                         custody, who listened, hold and export (compliance)
    GET  /calls/<rec>/audio?ps=<token>   Range playback (listener); first request = a play
    GET  /calls/<rec>/audio.wav          WAV download (listener)
    GET  /calls/<rec>/peaks.json         waveform peaks
    GET  /calls/<rec>/transcript.json    transcript download
    GET  /calls/<rec>/manifest.json      manifest download
    POST /calls/<rec>/verify             integrity check (re-hash against the manifest)
    POST /calls/<rec>/hold, /release     legal hold on / off (compliance)
    POST /calls/<rec>/export             signed evidence bundle of the call (compliance)
    GET  /holds                          active legal holds (compliance)
    GET|POST /login, POST /logout
    GET  /healthz /readyz /metrics       probes and Prometheus, without login

Which module serves what: console/core.py. This one adds the probes, the security
headers and request metrics, and the background refresh of the calls index.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator

import prometheus_client
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console import metrics
from console.actions import ComplianceActions
from console.call import CallPages
from console.calls import CallsPages
from console.core import HERE, ConsoleCore, route_label
from console.errors import BadRequest
from console.login import LoginPages
from console.playback import PlaybackPages
from console.trail import AuditUnavailable
from infra.store import ObjectNotFoundError
from schemas.compliance import VERIFY_STATUS_KEY, decode_verify_status

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


class HeadersAndMetrics:
    """Security headers on every response; request counts and latency by route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        label = route_label(scope["path"])
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                ]
                if b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = headers + extra
                status = message["status"]
                metrics.REQUESTS.labels(label, f"{status // 100}xx").inc()
                metrics.LATENCY.labels(label).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Console(ConsoleCore):
    """The app and what it serves from."""

    def app(self) -> Starlette:
        routes: list[BaseRoute] = [
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/metrics", self.metrics_page),
            Route("/", lambda r: RedirectResponse("/calls", 303)),
        ]
        for pages in (
            LoginPages(self),
            CallsPages(self),
            CallPages(self),
            PlaybackPages(self),
            ComplianceActions(self),
        ):
            routes += pages.routes()
        routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
        middleware = [
            Middleware(HeadersAndMetrics),
            Middleware(
                SessionMiddleware,
                secret_key=self.session_secret,
                session_cookie="callrec_console",
                max_age=self.settings.console_session_max_age_s,
                same_site="lax",
                https_only=self.settings.console_cookie_secure,
            ),
        ]
        return Starlette(
            routes=routes,
            middleware=middleware,
            lifespan=self._lifespan,
            exception_handlers={BadRequest: self._bad_request, AuditUnavailable: self._audit_down},
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(self._keep_index())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.to_thread(self.index.close)

    async def _keep_index(self) -> None:
        if not self.index.loaded:
            await asyncio.to_thread(self.index.load)
        while True:
            try:
                await asyncio.to_thread(self.trail.catch_up)  # who listened, read ahead
            except Exception:
                log.exception("reading the audit trail failed")
            await asyncio.sleep(self.settings.console_index_refresh_s)
            try:
                await asyncio.to_thread(self.index.refresh)
            except Exception:  # keep serving the index we have; say why
                log.exception("calls index refresh failed")
            await asyncio.to_thread(self._read_verify_status)

    def _read_verify_status(self) -> None:
        """Export the last recorded ``callrec verify`` (its CronJob serves no /metrics):
        the alerts CallrecVerifyProblems and CallrecVerifyStale watch these gauges."""
        try:
            status = decode_verify_status(self.store.get_bytes(VERIFY_STATUS_KEY))
        except (ObjectNotFoundError, FileNotFoundError):
            return  # verify has never recorded a run: no series, no alert
        except Exception as exc:
            log.warning("cannot read %s: %r", VERIFY_STATUS_KEY, exc)
            return
        metrics.VERIFY_PROBLEMS.set(status.problems)
        finished = dt.datetime.fromisoformat(status.finished_at.replace("Z", "+00:00"))
        metrics.VERIFY_FINISHED.set(finished.timestamp())

    async def _bad_request(self, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status", 400)
        return PlainTextResponse(f"{exc}\n", status)

    async def _audit_down(self, request: Request, exc: Exception) -> Response:
        return PlainTextResponse("the audit trail cannot be written; try again later\n", 503)

    # -- probes ---------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(self, request: Request) -> Response:
        if self.index.loaded:
            return PlainTextResponse("ready\n")
        return PlainTextResponse("not ready: loading the calls index\n", 503)

    async def metrics_page(self, request: Request) -> Response:
        return Response(
            prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST
        )
