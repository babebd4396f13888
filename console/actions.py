"""The compliance role's actions: legal holds and evidence exports (docs/console.md).

::

    POST /calls/<rec>/hold      reason=...   place a legal hold on the recording
    POST /calls/<rec>/release   reason=...   release it
    POST /calls/<rec>/export                 the call's signed evidence bundle (a ZIP download)
    GET  /holds[?all=1]                      the active holds (and, with all=1, released ones)

Each POST carries the session's CSRF token, and a user below the compliance role gets
403 (audited as ``denied``). The work is compliance/'s, the same as ``callrec hold``
and ``callrec export``: a hold sets the S3 Object Lock legal hold on every object of the
recording (a marker file on a local archive) and writes ``holds/<rec>.json``; each
change and each export is appended to the audit trail by the library, with the user and
the client's address. After a hold changes, the calls index re-reads the holds at once,
so the calls page's hold filter and the call page show it on the next request.

An export is built in a temporary directory (``TMPDIR``; on Kubernetes the pod's /tmp
emptyDir), opened, unlinked and streamed to the browser: it is never written into the
archive, and its disk space is freed once the download ends or is abandoned. The
signing key is read from ``CALLREC_CONSOLE_EXPORT_SIGNING_KEY_FILE`` at start-up (a bad
key stops the console) and at each export (a rotated Secret takes effect without a
restart); without it there is no export button and the endpoint answers 409.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from compliance.errors import NotFoundError
from compliance.export import ExportResult, export_call
from compliance.holds import HoldReport, clear_hold, list_holds, set_hold
from compliance.policy import LockPolicy
from compliance.recordings import load_hold
from console import metrics
from console.auth import Identity
from console.core import ConsoleCore
from console.errors import ExportKeyError
from infra.store import StoreError

log = logging.getLogger(__name__)

MAX_REASON = 500
"""Characters kept of a hold's reason (a matter or case reference, not a document)."""
BLOCK = 1024 * 1024
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class ComplianceActions:
    """Holds and exports, for the compliance role."""

    def __init__(self, core: ConsoleCore) -> None:
        self.core = core
        self._building = threading.Lock()
        """One bundle built at a time: /tmp is sized for one (docs/console.md)."""

    def routes(self) -> list[Route]:
        return [
            Route("/calls/{rec}/hold", self.place_hold, methods=["POST"]),
            Route("/calls/{rec}/release", self.release_hold, methods=["POST"]),
            Route("/calls/{rec}/export", self.export, methods=["POST"]),
            Route("/holds", self.holds_page),
        ]

    # -- holds ----------------------------------------------------------------------------

    async def _authorised(
        self, request: Request, action: str
    ) -> tuple[str, Identity, dict[str, Any]] | Response:
        """(recording id, identity, form) of a compliance POST; else the refusal."""
        core = self.core
        rec = core.rec(request)
        form = await core.post_form(request)
        if isinstance(form, Response):
            return form
        identity = await core.require(request, "compliance", action, rec)
        if isinstance(identity, Response):
            return identity
        return rec, identity, form

    async def place_hold(self, request: Request) -> Response:
        return await self._hold(request, on=True)

    async def release_hold(self, request: Request) -> Response:
        return await self._hold(request, on=False)

    async def _hold(self, request: Request, *, on: bool) -> Response:
        """Place (``on``) or release the recording's hold with compliance/holds.py, which
        audits the change; then re-read the holds so every page shows it at once."""
        core = self.core
        action = "hold.set" if on else "hold.clear"
        checked = await self._authorised(request, action)
        if isinstance(checked, Response):
            return checked
        rec, identity, form = checked
        reason = str(form.get("reason", "")).strip()[:MAX_REASON]
        if not reason:
            return core.error(
                request,
                400,
                "A legal hold needs a reason: the matter it is for."
                if on
                else "Releasing a legal hold needs a reason.",
            )
        held = await run_in_threadpool(load_hold, core.store, rec)
        if on and held is not None and held.active:
            return core.error(
                request,
                409,
                f"{rec} is already on hold (since {held.set_at}, by {held.set_by}, for "
                f"{held.reason}). Release it first to change the reason.",
            )
        if not on and (held is None or not held.active):
            return core.error(request, 409, f"{rec} is not on a legal hold.")
        address = core.auth.address(request)
        policy_hold = core.settings.s3_legal_hold

        def change() -> HoldReport:
            if on:
                return set_hold(core.store, [rec], reason, identity.user, address, core.trail.log)
            return clear_hold(
                core.store, [rec], reason, identity.user, address, core.trail.log, policy_hold
            )

        try:
            report = await run_in_threadpool(change)
        except (StoreError, OSError, RuntimeError) as exc:
            # Some objects may be held already: the page says so, and placing or releasing
            # again finishes the job (compliance/holds.py orders the steps for that).
            log.error("%s on %s by %s failed: %s", action, rec, identity.user, exc)
            await core.audit(request, identity, action, rec, "error", {"error": str(exc)[:300]})
            return core.error(
                request,
                502,
                f"The archive refused the change ({exc}); try again to finish it.",
            )
        if report.missing or not report.changed:
            return core.not_found(request, rec)
        await run_in_threadpool(core.index.reload_holds)
        metrics.HOLD_CHANGES.labels("set" if on else "clear").inc()
        objects = report.changed[0].objects
        if on:
            notice = f"Legal hold placed on {objects} objects."
        elif policy_hold:
            notice = (
                "Legal hold released; every object stays held by the bucket's policy "
                "(CALLREC_S3_LEGAL_HOLD)."
            )
        else:
            notice = f"Legal hold released on {objects} objects."
        request.session["notice"] = notice
        return RedirectResponse(f"/calls/{quote(rec)}", 303)

    async def holds_page(self, request: Request) -> Response:
        core = self.core
        identity = await core.require(request, "compliance", "search", "holds")
        if isinstance(identity, Response):
            return identity
        everything = request.query_params.get("all") == "1"
        records = await run_in_threadpool(list_holds, core.store, everything)
        await core.audit(request, identity, "search", "holds", detail={"holds": str(len(records))})
        return core.render(
            request, "holds.html", identity=identity, holds=records, everything=everything
        )

    # -- exports --------------------------------------------------------------------------

    async def export(self, request: Request) -> Response:
        core = self.core
        checked = await self._authorised(request, "export")
        if isinstance(checked, Response):
            return checked
        rec, identity, _ = checked
        if not core.export_key_file:
            return core.error(
                request,
                409,
                "Evidence exports are not set up on this console: it has no signing key "
                "(CALLREC_CONSOLE_EXPORT_SIGNING_KEY_FILE). `callrec export` makes bundles "
                "from a shell.",
            )
        manifest = await run_in_threadpool(core.manifest, rec)
        if manifest is None:
            return core.not_found(request, rec)
        try:
            key = await run_in_threadpool(core.signing_key)
        except ExportKeyError as exc:
            log.error("export of %s refused: %s", rec, exc)
            return core.error(request, 503, "The export signing key cannot be read now.")
        name = f"{_UNSAFE_NAME.sub('_', manifest.call_id)[:100] or 'call'}-evidence.zip"
        try:
            bundle, result = await run_in_threadpool(
                self._build, manifest.call_id, name, key, identity, core.auth.address(request)
            )
        except (NotFoundError, StoreError, OSError, RuntimeError) as exc:
            metrics.EXPORTS.labels("failed").inc()
            log.error("export of call_id=%s failed: %s", manifest.call_id, exc)
            return core.error(request, 502, f"The export failed: {exc}")
        metrics.EXPORTS.labels("ok").inc()
        log.info(
            "call_id=%s exported by %s: %d files, key %s, verification %s",
            manifest.call_id,
            identity.user,
            len(result.files),
            result.key_id,
            "passed" if result.verified else "found problems",
        )
        size = os.fstat(bundle.fileno()).st_size
        return StreamingResponse(
            iterate_in_threadpool(_blocks(bundle)),
            media_type="application/zip",
            headers={
                "content-disposition": f'attachment; filename="{name}"',
                "content-length": str(size),
                "cache-control": "private, no-store",
                "x-callrec-verified": "yes" if result.verified else "no",
            },
        )

    def _build(
        self, call_id: str, name: str, key: str, identity: Identity, address: str
    ) -> tuple[IO[bytes], ExportResult]:
        """Write the bundle in a temporary directory; return it open, already unlinked."""
        settings = self.core.settings
        policy = LockPolicy(
            mode=settings.s3_object_lock_mode,
            days=settings.s3_object_lock_days,
            legal_hold=settings.s3_legal_hold,
        )
        with self._building:
            staging = tempfile.mkdtemp(prefix="callrec-export-")
            try:
                out = Path(staging) / name
                result = export_call(
                    self.core.store,
                    call_id,
                    out,
                    key,
                    identity.user,
                    address,
                    policy,
                    self.core.trail.log,
                )
                return out.open("rb"), result
            finally:
                shutil.rmtree(staging, ignore_errors=True)  # the open file lives on


def _blocks(bundle: IO[bytes]) -> Iterator[bytes]:
    with bundle:
        while block := bundle.read(BLOCK):
            yield block
