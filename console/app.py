"""The review console's web app: Starlette routes over the calls index and the store.

Pages (server-rendered, Jinja2 with autoescaping, no inline script; docs/console.md)::

    GET  /calls[.csv]                    search, sort, keyset pages; the same view as CSV
    GET  /calls/<rec>                    call page: waveform, player, transcript, metrics,
                                         custody, who listened
    GET  /calls/<rec>/audio?ps=<token>   Range playback (listener); first request = a play
    GET  /calls/<rec>/audio.wav          WAV download (listener)
    GET  /calls/<rec>/peaks.json         waveform peaks
    GET  /calls/<rec>/transcript.json    transcript download
    GET  /calls/<rec>/manifest.json      manifest download
    POST /calls/<rec>/verify             integrity check (re-hash against the manifest)
    GET|POST /login, POST /logout
    GET  /healthz /readyz /metrics       probes and Prometheus, without login

Blocking work (DuckDB, the store, Argon2) runs in the thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import duckdb
import jinja2
import msgspec
import prometheus_client
import pyarrow as pa
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from compliance.verify import VerifyReport, verify_recording
from console import metrics
from console.auth import Authenticator, Identity, csrf_ok, csrf_token
from console.errors import BadRequest
from console.index import CallIndex
from console.media import PeaksSource, parse_range
from console.search import CallQuery, count_sql, encode_token, highlight, page_sql, snippets_sql
from console.settings import ConsoleSettings
from console.trail import AuditUnavailable, ConsoleTrail
from console.users import Role, Users, allows
from infra.store import ObjectNotFoundError, ObjectStore
from schemas.compliance import VERIFY_STATUS_KEY, decode_verify_status
from schemas.layout import manifest_key, transcript_key, wav_key
from schemas.manifest import Manifest, decode_manifest
from schemas.tables import table_key

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
_REC_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,199}")
_ROUTES = [
    (re.compile(p), label)
    for p, label in (
        (r"/calls/[^/]+/audio", "audio"),
        (r"/calls/[^/]+/audio\.wav", "download"),
        (r"/calls/[^/]+/(transcript|manifest|peaks)\.json", "json"),
        (r"/calls/[^/]+/verify", "verify"),
        (r"/calls/[^/]+", "call"),
        (r"/calls(\.csv)?", "calls"),
        (r"/static/.*", "static"),
        (r"/login|/logout", "login"),
        (r"/healthz|/readyz|/metrics", "probe"),
    )
]


def route_label(path: str) -> str:
    return next((label for pattern, label in _ROUTES if pattern.fullmatch(path)), "other")


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


class Console:
    """The app and what it serves from."""

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
        if session_secret is None and settings.console_session_secret is not None:
            session_secret = settings.console_session_secret.get_secret_value()
        if not session_secret:
            log.warning(
                "CALLREC_CONSOLE_SESSION_SECRET is unset: sessions end when this process does"
            )
            session_secret = secrets.token_urlsafe(32)
        self._session_secret = session_secret
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        env.filters["clock"] = _clock
        env.filters["seconds"] = _seconds
        env.filters["percent"] = lambda v: "" if v is None else f"{v * 100:.2f}%"
        env.filters["db"] = lambda v: "" if v is None else f"{v:.1f} dBFS"
        env.filters["ms"] = lambda v: "" if v is None else f"{int(v)} ms"
        self.env = env

    # -- the app --------------------------------------------------------------------------

    def app(self) -> Starlette:
        routes = [
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/metrics", self.metrics_page),
            Route("/", lambda r: RedirectResponse("/calls", 303)),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/calls", self.calls_page),
            Route("/calls.csv", self.calls_csv),
            Route("/calls/{rec}", self.call_page),
            Route("/calls/{rec}/audio", self.audio),
            Route("/calls/{rec}/audio.wav", self.download_wav),
            Route("/calls/{rec}/peaks.json", self.peaks_json),
            Route("/calls/{rec}/transcript.json", self.download_json),
            Route("/calls/{rec}/manifest.json", self.download_json),
            Route("/calls/{rec}/verify", self.verify, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        middleware = [
            Middleware(HeadersAndMetrics),
            Middleware(
                SessionMiddleware,
                secret_key=self._session_secret,
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

    # -- helpers --------------------------------------------------------------------------

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("identity", self.auth.identify(request))
        context["csrf"] = csrf_token(request)
        context["path"] = request.url.path
        html = self.env.get_template(name).render(**context)
        return Response(html, status, media_type="text/html; charset=utf-8")

    async def require(
        self, request: Request, needed: Role, action: str, target: str = ""
    ) -> Identity | Response:
        """The identity when it may do ``action``; else the answer: login (401) or 403.
        A refusal of a logged-in user is written to the audit trail."""
        identity = self.auth.identify(request)
        if identity is None:
            metrics.DENIED.labels("login").inc()
            if request.method == "GET" and route_label(request.url.path) in ("calls", "call"):
                back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?{urlencode({'next': back})}", 303)
            return PlainTextResponse("login required\n", 401)
        if not allows(identity.role, needed):
            metrics.DENIED.labels("role").inc()
            await self._audit(
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

    async def _audit(
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

    async def _post_form(self, request: Request) -> dict[str, Any] | Response:
        form = dict(await request.form())
        if not csrf_ok(request, form):
            metrics.DENIED.labels("csrf").inc()
            identity = self.auth.identify(request)
            await self._audit(request, identity, "csrf", request.url.path, "denied")
            return PlainTextResponse("CSRF token missing or wrong\n", 403)
        return form

    def _rec(self, request: Request) -> str:
        rec = request.path_params["rec"]
        if not _REC_ID.fullmatch(rec):
            raise BadRequest("not a recording id")
        return str(rec)

    def _manifest(self, rec: str) -> Manifest | None:
        try:
            return decode_manifest(self.store.get_bytes(manifest_key(rec)))
        except ObjectNotFoundError:
            return None

    def _not_found(self, request: Request, rec: str) -> Response:
        return self.render(request, "error.html", 404, message=f"No recording {rec}.")

    async def _bad_request(self, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status", 400)
        return PlainTextResponse(f"{exc}\n", status)

    async def _audit_down(self, request: Request, exc: Exception) -> Response:
        return PlainTextResponse("the audit trail cannot be written; try again later\n", 503)

    def _index_ready(self, request: Request) -> Response | None:
        if self.index.loaded:
            return None
        return self.render(
            request,
            "error.html",
            503,
            message="The calls index is still loading; try again shortly.",
        )

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

    # -- login ----------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self.render(
            request, "login.html", next=_safe_next(request.query_params.get("next", "")), error=""
        )

    async def login(self, request: Request) -> Response:
        form = await self._post_form(request)
        if isinstance(form, Response):
            return form
        name, password = str(form.get("user", ""))[:200], str(form.get("password", ""))
        user = await run_in_threadpool(self.users.authenticate, name, password[:1000])
        nxt = _safe_next(str(form.get("next", "")))
        if user is None:
            metrics.DENIED.labels("password").inc()
            await run_in_threadpool(
                self.trail.append,
                actor=name or "-",
                action="login",
                address=self.auth.address(request),
                outcome="denied",
            )
            return self.render(
                request, "login.html", 401, next=nxt, error="Wrong user name or password."
            )
        request.session.clear()
        request.session.update({"user": user.name, "role": user.role})
        csrf_token(request)  # a fresh token for the new session
        await run_in_threadpool(
            self.trail.append, actor=user.name, action="login", address=self.auth.address(request)
        )
        return RedirectResponse(nxt or "/calls", 303)

    async def logout(self, request: Request) -> Response:
        form = await self._post_form(request)
        if isinstance(form, Response):
            return form
        identity = self.auth.identify(request)
        if identity is not None:
            await self._audit(request, identity, "logout")
        request.session.clear()
        return RedirectResponse("/login", 303)

    # -- calls ----------------------------------------------------------------------------

    def _search(self, query: CallQuery) -> dict[str, Any]:
        cur = self.index.cursor()
        columns = self.index.columns
        size = self.settings.console_page_size
        sql, args = page_sql(query, columns, size)
        rows = _arrow(cur, sql, args).to_pylist()
        more = len(rows) > size
        rows = rows[:size]
        count_q, count_args = count_sql(query, columns)
        total = cur.execute(count_q, count_args).fetchone()
        snippets: dict[str, list[dict[str, Any]]] = {}
        if query.q and rows:
            s_sql, s_args = snippets_sql(query, [r["recording_id"] for r in rows])
            for rec, start_ms, speaker, text in cur.execute(s_sql, s_args).fetchall():
                snippets.setdefault(rec, []).append(
                    {"start_ms": start_ms, "speaker": speaker, "pieces": highlight(text, query.q)}
                )
        next_url = ""
        if more:
            last = rows[-1]
            next_url = query.url(
                next=encode_token(_plain(last["sort_value"]), last["recording_id"])
            )
        return {
            "rows": rows,
            "total": total[0] if total else 0,
            "snippets": snippets,
            "next_url": next_url,
        }

    async def calls_page(self, request: Request) -> Response:
        identity = await self.require(request, "viewer", "search")
        if isinstance(identity, Response):
            return identity
        if (waiting := self._index_ready(request)) is not None:
            return waiting
        query = CallQuery.parse(request.query_params)
        result = await run_in_threadpool(self._search, query)
        await self._audit(
            request,
            identity,
            "search",
            "calls",
            detail={"query": urlencode(query.params()), "total": str(result["total"])},
        )
        columns = self.index.columns
        return self.render(
            request,
            "calls.html",
            identity=identity,
            query=query,
            **result,
            csv_url=query.url("/calls.csv", next=""),
            first_url=query.url(next="") if query.next else "",
            has_numbers=all(c in columns for c in ("from_number", "to_number")),
            has_direction="direction" in columns,
            held=self.index.held,
            sort_url=lambda col: query.url(
                sort=col,
                next="",
                order="asc" if query.sort == col and query.order == "desc" else "desc",
            ),
        )

    async def calls_csv(self, request: Request) -> Response:
        identity = await self.require(request, "viewer", "download", "calls.csv")
        if isinstance(identity, Response):
            return identity
        if (waiting := self._index_ready(request)) is not None:
            return waiting
        query = CallQuery.parse(request.query_params)
        await self._audit(
            request, identity, "download", "calls.csv", detail={"query": urlencode(query.params())}
        )
        limit = self.settings.console_csv_max_rows

        def lines() -> Iterator[str]:
            sql, args = page_sql(query, self.index.columns, limit - 1)
            cur = self.index.cursor()
            table = _arrow(cur, sql, args)
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            header = [c for c in table.column_names if c != "sort_value"]
            writer.writerow(header)
            for batch in table.to_batches(2000):
                for row in batch.to_pylist():
                    writer.writerow([_csv_cell(row[c]) for c in header])
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
            yield buffer.getvalue()

        return StreamingResponse(
            iterate_in_threadpool(lines()),
            media_type="text/csv",
            headers={"content-disposition": 'attachment; filename="calls.csv"'},
        )

    # -- one call -------------------------------------------------------------------------

    def _call_data(self, rec: str) -> dict[str, Any] | None:
        manifest = self._manifest(rec)
        if manifest is None:
            return None
        cur = self.index.cursor()
        table = _arrow(cur, "SELECT * FROM calls_idx WHERE recording_id = ?", [rec]).to_pylist()
        call = table[0] if table else None
        metric_rows = _arrow(
            cur,
            "SELECT * FROM metrics_idx WHERE recording_id = ? ORDER BY track = 'call', track",
            [rec],
        ).to_pylist()
        try:
            transcript = msgspec.json.decode(self.store.get_bytes(transcript_key(rec)))
        except (ObjectNotFoundError, msgspec.DecodeError):
            transcript = None
        try:
            lock = self.store.lock_state(wav_key(rec))
        except Exception:  # a store without Object Lock support: nothing to show
            lock = None
        pauses = manifest.pauses if isinstance(manifest.pauses, list) else []
        turn_rows = self._recording_rows("turns", manifest.date, rec)
        turn_figures = self._recording_rows("turn_metrics", manifest.date, rec)
        return {
            "manifest": manifest,
            "call": call,
            "metrics": metric_rows,
            "pauses": pauses,
            "turns": sorted(turn_rows, key=lambda t: t["turn"]),
            "turn_figures": sorted(turn_figures, key=lambda m: (m["track"] == "call", m["track"])),
            "transcript": transcript,
            "lock": lock,
            "on_hold": rec in self.index.held,
            "listens": self.trail.listens(rec),
        }

    def _recording_rows(self, table: str, date: str, rec: str) -> list[dict[str, Any]]:
        """One recording's rows of an analyzer table, read from its own file (small)."""
        import pyarrow.parquet as pq

        try:
            data = self.store.get_bytes(table_key(table, date, rec))
        except (ObjectNotFoundError, FileNotFoundError):
            return []
        rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
        return rows

    async def call_page(self, request: Request) -> Response:
        rec = self._rec(request)
        identity = await self.require(request, "viewer", "view", rec)
        if isinstance(identity, Response):
            return identity
        data = await run_in_threadpool(self._call_data, rec)
        if data is None:
            return self._not_found(request, rec)
        await self._audit(request, identity, "view", rec)
        try:
            start_at = max(0.0, float(request.query_params.get("t", "0") or 0))
        except ValueError:
            start_at = 0.0
        manifest: Manifest = data["manifest"]
        return self.render(
            request,
            "call.html",
            identity=identity,
            rec=rec,
            **data,
            can_listen=allows(identity.role, "listener"),
            play_session=secrets.token_urlsafe(12),
            start_at=f"{start_at:.3f}",
            speakers={t: ("caller" if t == "inbound" else "agent") for t in manifest.tracks},
        )

    async def audio(self, request: Request) -> Response:
        rec = self._rec(request)
        session = request.query_params.get("ps", "")[:64]
        identity = self.auth.identify(request)
        if identity is not None and allows(identity.role, "listener"):
            if self.trail.new_play(identity.user, rec, session):
                try:
                    await self._audit(
                        request,
                        identity,
                        "play",
                        rec,
                        detail={"session": session} if session else None,
                    )
                except AuditUnavailable:
                    self.trail.forget_play(identity.user, rec, session)
                    raise
        else:
            checked = await self.require(request, "listener", "play", rec)
            if isinstance(checked, Response):
                return checked
        return await self._serve_audio(request, rec, download=False)

    async def download_wav(self, request: Request) -> Response:
        rec = self._rec(request)
        identity = await self.require(request, "listener", "download", rec)
        if isinstance(identity, Response):
            return identity
        await self._audit(request, identity, "download", rec, detail={"object": "audio.wav"})
        return await self._serve_audio(request, rec, download=True)

    async def _serve_audio(self, request: Request, rec: str, *, download: bool) -> Response:
        key = wav_key(rec)
        try:
            size = await run_in_threadpool(self.store.size, key)
        except ObjectNotFoundError:
            return self._not_found(request, rec)
        headers = {"accept-ranges": "bytes", "cache-control": "private, no-store"}
        if download:
            headers["content-disposition"] = f'attachment; filename="{quote(rec)}.wav"'
        header = request.headers.get("range")
        if header and not download:
            start, end = parse_range(header, size)
            body = await run_in_threadpool(self.store.get_range, key, start, end)
            headers["content-range"] = f"bytes {start}-{start + len(body) - 1}/{size}"
            return Response(body, 206, headers=headers, media_type="audio/wav")
        headers["content-length"] = str(size)
        return StreamingResponse(
            iterate_in_threadpool(self.store.iter_bytes(key)),
            headers=headers,
            media_type="audio/wav",
        )

    async def peaks_json(self, request: Request) -> Response:
        rec = self._rec(request)
        identity = await self.require(request, "viewer", "view", rec)
        if isinstance(identity, Response):
            return identity
        manifest = await run_in_threadpool(self._manifest, rec)
        if manifest is None:
            return self._not_found(request, rec)
        data = await run_in_threadpool(self.peaks.get, manifest)
        return Response(
            data, media_type="application/json", headers={"cache-control": "private, max-age=3600"}
        )

    async def download_json(self, request: Request) -> Response:
        rec = self._rec(request)
        name = request.url.path.rsplit("/", 1)[1]
        identity = await self.require(request, "viewer", "download", rec)
        if isinstance(identity, Response):
            return identity
        key = transcript_key(rec) if name == "transcript.json" else manifest_key(rec)
        try:
            data = await run_in_threadpool(self.store.get_bytes, key)
        except ObjectNotFoundError:
            return self.render(request, "error.html", 404, message=f"No {name} for {rec}.")
        await self._audit(request, identity, "download", rec, detail={"object": name})
        return Response(
            data,
            media_type="application/json",
            headers={"content-disposition": f'attachment; filename="{quote(rec)}-{name}"'},
        )

    async def verify(self, request: Request) -> Response:
        rec = self._rec(request)
        form = await self._post_form(request)
        if isinstance(form, Response):
            return form
        identity = await self.require(request, "viewer", "verify", rec)
        if isinstance(identity, Response):
            return identity
        manifest = await run_in_threadpool(self._manifest, rec)
        if manifest is None:
            return self._not_found(request, rec)
        report: VerifyReport = await run_in_threadpool(verify_recording, self.store, rec)
        await self._audit(
            request,
            identity,
            "verify",
            rec,
            outcome="ok" if report.ok else "error",
            detail={
                "result": "verified" if report.ok else "mismatch",
                "problems": str(len(report.problems)),
            },
        )
        by_key = {p.key: p for p in report.problems}
        objects = [
            {
                "key": o.key,
                "sha256": o.sha256,
                "size": o.size,
                "outcome": by_key[o.key].kind if o.key in by_key else "verified",
                "detail": by_key[o.key].detail if o.key in by_key else "",
            }
            for o in manifest.objects
        ]
        listed = {o.key for o in manifest.objects}
        return self.render(
            request,
            "integrity.html",
            identity=identity,
            rec=rec,
            ok=report.ok,
            objects=objects,
            others=[p for p in report.problems if p.key not in listed],
        )


def _arrow(cur: duckdb.DuckDBPyConnection, sql: str, args: list[Any]) -> pa.Table:
    """The result as Arrow (DuckDB's own row conversion needs pytz for TIMESTAMPTZ)."""
    return cur.sql(sql, params=args).to_arrow_table()


def _safe_next(value: str) -> str:
    """A local path to go back to after login (never another site)."""
    return (
        value
        if value.startswith("/") and not value.startswith("//") and ("\\" not in value)
        else ""
    )


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return value


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    text = str(value)
    # A cell a spreadsheet would run as a formula (call ids come from outside) is quoted.
    return "'" + text if isinstance(value, str) and text[:1] in ("=", "+", "-", "@") else text


def _clock(ms: Any) -> str:
    """Milliseconds as m:ss.s (or h:mm:ss)."""
    if ms is None:
        return ""
    seconds = float(ms) / 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{int(hours)}:{int(minutes):02d}:{secs:04.1f}"
    return f"{int(minutes)}:{secs:04.1f}"


def _seconds(ms: Any) -> str:
    return "" if ms is None else f"{float(ms) / 1000:.1f} s"
