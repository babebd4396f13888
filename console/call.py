"""One call: its page, waveform peaks, transcript and manifest downloads, and the
integrity check (``GET /calls/<rec>[/peaks|transcript|manifest.json]``, ``POST
/calls/<rec>/verify``; docs/console.md, "Call page").

The call page shows the manifest's custody, the analyzer's tables for the recording,
the transcript, who listened (console/trail.py), the legal hold and, for the compliance
role, the hold's reason and the hold and export forms (console/actions.py).
"""

from __future__ import annotations

import io
import secrets
from typing import Any
from urllib.parse import quote

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from compliance.recordings import load_hold
from compliance.verify import VerifyReport, verify_recording
from console.core import ConsoleCore, arrow
from console.users import allows
from infra.store import ObjectNotFoundError
from schemas.layout import manifest_key, transcript_key, wav_key
from schemas.manifest import Manifest
from schemas.tables import table_key


class CallPages:
    """The call page and what it links to (but the audio: console/playback.py)."""

    def __init__(self, core: ConsoleCore) -> None:
        self.core = core

    def routes(self) -> list[Route]:
        return [
            Route("/calls/{rec}", self.call_page),
            Route("/calls/{rec}/peaks.json", self.peaks_json),
            Route("/calls/{rec}/transcript.json", self.download_json),
            Route("/calls/{rec}/manifest.json", self.download_json),
            Route("/calls/{rec}/verify", self.verify, methods=["POST"]),
        ]

    def _call_data(self, rec: str, compliance: bool) -> dict[str, Any] | None:
        store = self.core.store
        manifest = self.core.manifest(rec)
        if manifest is None:
            return None
        cur = self.core.index.cursor()
        table = arrow(cur, "SELECT * FROM calls_idx WHERE recording_id = ?", [rec]).to_pylist()
        call = table[0] if table else None
        metric_rows = arrow(
            cur,
            "SELECT * FROM metrics_idx WHERE recording_id = ? ORDER BY track = 'call', track",
            [rec],
        ).to_pylist()
        try:
            transcript = msgspec.json.decode(store.get_bytes(transcript_key(rec)))
        except (ObjectNotFoundError, msgspec.DecodeError):
            transcript = None
        try:
            lock = store.lock_state(wav_key(rec))
        except Exception:  # a store without Object Lock support: nothing to show
            lock = None
        pauses = manifest.pauses if isinstance(manifest.pauses, list) else []
        turn_rows = self._recording_rows("turns", manifest.date, rec)
        turn_figures = self._recording_rows("turn_metrics", manifest.date, rec)
        # Who placed the hold and why: a matter's name is the compliance role's business.
        hold = load_hold(store, rec) if compliance else None
        return {
            "manifest": manifest,
            "call": call,
            "metrics": metric_rows,
            "pauses": pauses,
            "turns": sorted(turn_rows, key=lambda t: t["turn"]),
            "turn_figures": sorted(turn_figures, key=lambda m: (m["track"] == "call", m["track"])),
            "transcript": transcript,
            "lock": lock,
            "on_hold": rec in self.core.index.held,
            "hold": hold if hold is not None and hold.active else None,
            "listens": self.core.trail.listens(rec),
        }

    def _recording_rows(self, table: str, date: str, rec: str) -> list[dict[str, Any]]:
        """One recording's rows of an analyzer table, read from its own file (small)."""
        import pyarrow.parquet as pq

        try:
            data = self.core.store.get_bytes(table_key(table, date, rec))
        except (ObjectNotFoundError, FileNotFoundError):
            return []
        rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
        return rows

    async def call_page(self, request: Request) -> Response:
        core = self.core
        rec = core.rec(request)
        identity = await core.require(request, "viewer", "view", rec)
        if isinstance(identity, Response):
            return identity
        compliance = allows(identity.role, "compliance")
        data = await run_in_threadpool(self._call_data, rec, compliance)
        if data is None:
            return core.not_found(request, rec)
        await core.audit(request, identity, "view", rec)
        try:
            start_at = max(0.0, float(request.query_params.get("t", "0") or 0))
        except ValueError:
            start_at = 0.0
        manifest: Manifest = data["manifest"]
        return core.render(
            request,
            "call.html",
            identity=identity,
            rec=rec,
            **data,
            can_listen=allows(identity.role, "listener"),
            compliance=compliance,
            can_export=bool(core.export_key_file),
            notice=request.session.pop("notice", ""),
            play_session=secrets.token_urlsafe(12),
            start_at=f"{start_at:.3f}",
            speakers={t: ("caller" if t == "inbound" else "agent") for t in manifest.tracks},
        )

    async def peaks_json(self, request: Request) -> Response:
        core = self.core
        rec = core.rec(request)
        identity = await core.require(request, "viewer", "view", rec)
        if isinstance(identity, Response):
            return identity
        manifest = await run_in_threadpool(core.manifest, rec)
        if manifest is None:
            return core.not_found(request, rec)
        data = await run_in_threadpool(core.peaks.get, manifest)
        return Response(
            data, media_type="application/json", headers={"cache-control": "private, max-age=3600"}
        )

    async def download_json(self, request: Request) -> Response:
        core = self.core
        rec = core.rec(request)
        name = request.url.path.rsplit("/", 1)[1]
        identity = await core.require(request, "viewer", "download", rec)
        if isinstance(identity, Response):
            return identity
        key = transcript_key(rec) if name == "transcript.json" else manifest_key(rec)
        try:
            data = await run_in_threadpool(core.store.get_bytes, key)
        except ObjectNotFoundError:
            return core.error(request, 404, f"No {name} for {rec}.")
        await core.audit(request, identity, "download", rec, detail={"object": name})
        return Response(
            data,
            media_type="application/json",
            headers={"content-disposition": f'attachment; filename="{quote(rec)}-{name}"'},
        )

    async def verify(self, request: Request) -> Response:
        core = self.core
        rec = core.rec(request)
        form = await core.post_form(request)
        if isinstance(form, Response):
            return form
        identity = await core.require(request, "viewer", "verify", rec)
        if isinstance(identity, Response):
            return identity
        manifest = await run_in_threadpool(core.manifest, rec)
        if manifest is None:
            return core.not_found(request, rec)
        report: VerifyReport = await run_in_threadpool(verify_recording, core.store, rec)
        await core.audit(
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
        return core.render(
            request,
            "integrity.html",
            identity=identity,
            rec=rec,
            ok=report.ok,
            objects=objects,
            others=[p for p in report.problems if p.key not in listed],
        )
