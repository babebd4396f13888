"""The control plane's HTTP service (Starlette): Wavix webhooks in, Kafka out.

==========================================  ===================================================
``POST /v1/wavix/events/<secret>``          a Wavix call event. 200 once it is durable in
                                            Kafka (or is of an unknown type: counted, not
                                            kept); 404 for a wrong secret (nothing revealed);
                                            400 not a call event; 413 body over the limit;
                                            503 Kafka unavailable (Wavix retries).
``POST /v1/calls/{id}/pause``, ``/resume``  Bearer ``CALLREC_CONTROL_API_TOKEN``: 202 once the
                                            request is durable; the controller acts on it.
``GET /healthz``, ``/readyz``, ``/metrics`` probes (no auth) and Prometheus metrics
==========================================  ===================================================

Stateless: every pod can take every event. The event is written to ``callrec.calls``
keyed by call id with ``acks=all`` *before* the 200, so an event Wavix saw accepted is
never lost; the controller (``control.controller``) does the rest. Forwarding to the
user's own URL happens after the answer, in the background (``control.forwarder``).
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import TYPE_CHECKING

import prometheus_client
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from control import metrics
from schemas import callevents, envelope
from schemas.callevents import CallEvent
from schemas.errors import CallEventError

if TYPE_CHECKING:
    from control.forwarder import Forwarder
    from infra.bus import Producer

log = logging.getLogger(__name__)

API_ACTIONS = ("pause", "resume")


class _TooLarge(Exception):
    pass


class ControlApi:
    """The ASGI app and what it needs: the producer, the secrets, the forwarder."""

    def __init__(
        self,
        *,
        producer: Producer,
        calls_topic: str,
        webhook_secret: str | None,
        api_token: str | None,
        max_body_bytes: int,
        forwarder: Forwarder | None = None,
    ) -> None:
        self.producer = producer
        self.calls_topic = calls_topic
        self._secret = webhook_secret.encode() if webhook_secret else None
        self._token = api_token.encode() if api_token else None
        self.max_body_bytes = max_body_bytes
        self.forwarder = forwarder
        self.producer_started = False
        self.draining = False
        self.app = Starlette(
            routes=[
                Route("/v1/wavix/events/{secret}", self.webhook, methods=["POST"]),
                Route("/v1/calls/{call_id}/{action}", self.call_action, methods=["POST"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ],
            exception_handlers={404: _on_not_found, 405: _on_not_found},
        )
        if not self._secret:
            log.warning("CALLREC_CONTROL_WEBHOOK_SECRET is unset: the webhook answers 404")

    @property
    def ready(self) -> bool:
        return self.producer_started and not self.draining

    # -- webhook -------------------------------------------------------------------------

    async def webhook(self, request: Request) -> Response:
        given = request.path_params["secret"].encode()
        if self._secret is None or not hmac.compare_digest(given, self._secret):
            metrics.WEBHOOK_EVENTS.labels("wrong_secret").inc()
            return _not_found()
        try:
            body = await self._body(request)
        except _TooLarge:
            metrics.WEBHOOK_EVENTS.labels("too_large").inc()
            log.warning("webhook body over %d bytes refused (413)", self.max_body_bytes)
            return PlainTextResponse("body too large\n", status_code=413)
        except ClientDisconnect:
            return PlainTextResponse("", status_code=400)
        try:
            event = callevents.parse(body)
        except CallEventError as exc:
            metrics.WEBHOOK_EVENTS.labels("malformed").inc()
            log.warning("webhook body refused (400): %s", exc.reason)
            return PlainTextResponse(f"not a call event: {exc.reason}\n", status_code=400)
        if not event.known:
            metrics.WEBHOOK_EVENTS.labels("unknown_type").inc()
            log.info("call_id=%r: unknown event type %r, ignored", event.call_id, event.event_type)
            self._forward(body)
            return PlainTextResponse("ignored: unknown event type\n")
        if not await self._publish(event, "wavix"):
            metrics.WEBHOOK_EVENTS.labels("kafka_unavailable").inc()
            return PlainTextResponse("try again later\n", status_code=503)
        metrics.WEBHOOK_EVENTS.labels("accepted").inc()
        self._forward(body)
        return PlainTextResponse("ok\n")

    async def _body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def _publish(self, event: CallEvent, source: envelope.CallEventSource) -> bool:
        record = envelope.CallEventReceived(event=event, received_ns=time.time_ns(), source=source)
        try:
            await self.producer.send_and_wait(
                self.calls_topic, envelope.encode(record), key=event.call_id.encode()
            )
        except Exception as exc:  # aiokafka raises KafkaError subclasses and timeouts
            log.error(
                "call_id=%r: event %s not accepted, Kafka: %r", event.call_id, event.event_type, exc
            )
            return False
        return True

    def _forward(self, body: bytes) -> None:
        if self.forwarder is not None:
            self.forwarder.submit(body)

    # -- control API ---------------------------------------------------------------------

    async def call_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in API_ACTIONS:
            return _not_found()
        if not self._authorized(request):
            metrics.PAUSES.labels(action, "unauthorized").inc()
            return JSONResponse(
                {"success": False, "error": "unauthorized"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        call_id = request.path_params["call_id"]
        if not 0 < len(call_id) <= callevents.MAX_ID:
            return JSONResponse({"success": False, "error": "bad call id"}, status_code=400)
        event = CallEvent(call_id=call_id, event_type=action)
        if not await self._publish(event, "api"):
            return JSONResponse({"success": False, "error": "try again later"}, status_code=503)
        metrics.PAUSES.labels(action, "accepted").inc()
        log.info("call_id=%r: %s requested", call_id, action)
        return JSONResponse(
            {"success": True, "call_id": call_id, "action": action}, status_code=202
        )

    def _authorized(self, request: Request) -> bool:
        if self._token is None:
            return False
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return False
        return hmac.compare_digest(given.strip().encode(), self._token)

    # -- probes --------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(self, request: Request) -> Response:
        if self.ready:
            return PlainTextResponse("ready\n")
        why = "draining" if self.draining else "kafka unavailable"
        return PlainTextResponse(f"not ready: {why}\n", status_code=503)

    async def metrics(self, request: Request) -> Response:
        return Response(
            prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST
        )


async def _on_not_found(request: Request, exc: Exception) -> Response:
    # Unknown paths and methods look the same as a wrong secret: nothing revealed.
    return _not_found()


def _not_found() -> Response:
    return PlainTextResponse("not found\n", status_code=404)
