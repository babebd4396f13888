"""What every page of the console shares: its settings, store, calls index, audit trail
and authenticator, and the steps each handler takes (render, require a role, audit,
check a form's CSRF token).

The handlers themselves are grouped by what they serve, one module each, every one
a small class over a :class:`ConsoleCore` with a ``routes()`` method:

    console/login.py     GET|POST /login, POST /logout (with the login throttle)
    console/calls.py     GET /calls, /calls.csv
    console/call.py      GET /calls/<rec>, its peaks, transcript and manifest; POST verify
    console/playback.py  GET /calls/<rec>/audio (Range), /calls/<rec>/audio.wav
    console/actions.py   holds and evidence exports (compliance), GET /holds

console/app.py assembles them with the probes, the middleware and the background
index refresh. Blocking work (DuckDB, the store, Argon2) runs in the thread pool.
"""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import jinja2
import pyarrow as pa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from compliance.errors import SigningKeyError
from compliance.export import load_private_key
from console import metrics
from console.auth import Authenticator, Identity, csrf_ok, csrf_token
from console.errors import BadRequest, ExportKeyError
from console.index import CallIndex
from console.media import PeaksSource
from console.settings import ConsoleSettings
from console.throttle import LoginThrottle
from console.trail import ConsoleTrail
from console.users import Role, Users, allows
from infra.store import ObjectNotFoundError, ObjectStore
from schemas.layout import manifest_key
from schemas.manifest import Manifest, decode_manifest

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
_REC_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,199}")
_ROUTES = [
    (re.compile(p), label)
    for p, label in (
        (r"/calls/[^/]+/audio", "audio"),
        (r"/calls/[^/]+/audio\.wav", "download"),
        (r"/calls/[^/]+/(transcript|manifest|peaks)\.json", "json"),
        (r"/calls/[^/]+/verify", "verify"),
        (r"/calls/[^/]+/(hold|release)|/holds", "hold"),
        (r"/calls/[^/]+/export", "export"),
        (r"/calls/[^/]+", "call"),
        (r"/calls(\.csv)?", "calls"),
        (r"/static/.*", "static"),
        (r"/login|/logout", "login"),
        (r"/healthz|/readyz|/metrics", "probe"),
    )
]
_PAGES = ("calls", "call", "hold")
"""Routes whose GET sends a stranger to the login page (the rest answer 401)."""


def route_label(path: str) -> str:
    """The metrics' ``route`` label of a path (a few fixed values, never a call id)."""
    return next((label for pattern, label in _ROUTES if pattern.fullmatch(path)), "other")


class ConsoleCore:
    """The console's state and the steps every handler shares."""

    def __init__(
        self,
        settings: ConsoleSettings,
        store: ObjectStore,
        *,
        index: CallIndex | None = None,
        users: Users | None = None,
        session_secret: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.index = index or CallIndex.for_console(store, settings)
        self.users = users if users is not None else Users.load(settings.console_users_file)
        self.trail = ConsoleTrail(store)
        self.auth = Authenticator(settings.console_trusted_proxies, settings.console_proxy_roles)
        self.peaks = PeaksSource(store, settings.console_peaks_cache)
        self.export_key_file = settings.console_export_signing_key_file
        """The evidence exports' signing key (console/actions.py); None: no exports."""
        if self.export_key_file:
            self.signing_key()  # a missing or bad key stops the start-up, not the first export
        self.throttle = LoginThrottle(
            settings.console_login_max_failures,
            settings.console_login_max_address_failures,
            settings.console_login_window_s,
        )
        if session_secret is None and settings.console_session_secret is not None:
            session_secret = settings.console_session_secret.get_secret_value()
        if not session_secret:
            log.warning(
                "CALLREC_CONSOLE_SESSION_SECRET is unset: sessions end when this process does"
            )
            session_secret = secrets.token_urlsafe(32)
        self.session_secret = session_secret
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        env.filters["clock"] = clock
        env.filters["seconds"] = lambda ms: "" if ms is None else f"{float(ms) / 1000:.1f} s"
        env.filters["percent"] = lambda v: "" if v is None else f"{v * 100:.2f}%"
        env.filters["db"] = lambda v: "" if v is None else f"{v:.1f} dBFS"
        env.filters["ms"] = lambda v: "" if v is None else f"{int(v)} ms"
        self.env = env

    def signing_key(self) -> str:
        """The export signing key's text (read each time: a rotated Secret takes effect
        without a restart), checked to be an Ed25519 private key."""
        assert self.export_key_file
        try:
            text = Path(self.export_key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ExportKeyError(
                f"cannot read the export signing key {self.export_key_file}: {exc}"
            ) from None
        try:
            load_private_key(text)
        except SigningKeyError as exc:
            raise ExportKeyError(f"{self.export_key_file}: {exc}") from None
        return text

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("identity", self.auth.identify(request))
        context["csrf"] = csrf_token(request)
        context["path"] = request.url.path
        html = self.env.get_template(name).render(**context)
        return Response(html, status, media_type="text/html; charset=utf-8")

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.render(request, "error.html", status, message=message)

    async def require(
        self, request: Request, needed: Role, action: str, target: str = ""
    ) -> Identity | Response:
        """The identity when it may do ``action``; else the answer: login (401) or 403.
        A refusal of a logged-in user is written to the audit trail."""
        identity = self.auth.identify(request)
        if identity is None:
            metrics.DENIED.labels("login").inc()
            if request.method == "GET" and route_label(request.url.path) in _PAGES:
                back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?{urlencode({'next': back})}", 303)
            return PlainTextResponse("login required\n", 401)
        if not allows(identity.role, needed):
            metrics.DENIED.labels("role").inc()
            await self.audit(
                request,
                identity,
                action,
                target,
                "denied",
                {"role": identity.role, "needed": needed},
            )
            return self.render(
                request,
                "error.html",
                403,
                identity=identity,
                message=f"Your role ({identity.role}) may not do this: {action} needs {needed}.",
            )
        return identity

    async def audit(
        self,
        request: Request,
        identity: Identity | None,
        action: str,
        target: str = "",
        outcome: str = "ok",
        detail: dict[str, str] | None = None,
    ) -> None:
        await run_in_threadpool(
            self.trail.append,
            actor=identity.user if identity else "-",
            action=action,
            target=target,
            address=self.auth.address(request),
            outcome=outcome,
            detail=detail,
        )

    async def post_form(self, request: Request) -> dict[str, Any] | Response:
        """The POSTed form when it carries the session's CSRF token; else 403 (audited)."""
        form = dict(await request.form())
        if not csrf_ok(request, form):
            metrics.DENIED.labels("csrf").inc()
            identity = self.auth.identify(request)
            await self.audit(request, identity, "csrf", request.url.path, "denied")
            return PlainTextResponse("CSRF token missing or wrong\n", 403)
        return form

    def rec(self, request: Request) -> str:
        """The recording id of the path (400 unless it looks like one)."""
        rec = request.path_params["rec"]
        if not _REC_ID.fullmatch(rec):
            raise BadRequest("not a recording id")
        return str(rec)

    def manifest(self, rec: str) -> Manifest | None:
        try:
            return decode_manifest(self.store.get_bytes(manifest_key(rec)))
        except ObjectNotFoundError:
            return None

    def not_found(self, request: Request, rec: str) -> Response:
        return self.error(request, 404, f"No recording {rec}.")

    def index_ready(self, request: Request) -> Response | None:
        """None once the calls index is loaded; until then a 503 page."""
        if self.index.loaded:
            return None
        return self.error(request, 503, "The calls index is still loading; try again shortly.")


def arrow(cur: duckdb.DuckDBPyConnection, sql: str, args: list[Any]) -> pa.Table:
    """The result as Arrow (DuckDB's own row conversion needs pytz for TIMESTAMPTZ)."""
    return cur.sql(sql, params=args).to_arrow_table()


def clock(ms: Any) -> str:
    """Milliseconds as m:ss.s (or h:mm:ss)."""
    if ms is None:
        return ""
    seconds = float(ms) / 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{int(hours)}:{int(minutes):02d}:{secs:04.1f}"
    return f"{int(minutes)}:{secs:04.1f}"
