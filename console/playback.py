"""Playback and the WAV download: ``GET /calls/<rec>/audio?ps=<token>`` (HTTP Range,
206, listener) and ``GET /calls/<rec>/audio.wav``.

A play is one playback session (console/trail.py): the first audio request of a
(user, recording, token) is written to the audit trail as ``play``; the Range requests
that follow with the same token are the same play. docs/console.md, "Playback".
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from console.core import ConsoleCore
from console.media import parse_range
from console.trail import AuditUnavailable
from console.users import allows
from infra.store import ObjectNotFoundError
from schemas.layout import wav_key


class PlaybackPages:
    """The audio of a recording, for the listener role and above."""

    def __init__(self, core: ConsoleCore) -> None:
        self.core = core

    def routes(self) -> list[Route]:
        return [
            Route("/calls/{rec}/audio", self.audio),
            Route("/calls/{rec}/audio.wav", self.download_wav),
        ]

    async def audio(self, request: Request) -> Response:
        core = self.core
        rec = core.rec(request)
        session = request.query_params.get("ps", "")[:64]
        identity = core.auth.identify(request)
        if identity is not None and allows(identity.role, "listener"):
            if core.trail.new_play(identity.user, rec, session):
                try:
                    await core.audit(
                        request,
                        identity,
                        "play",
                        rec,
                        detail={"session": session} if session else None,
                    )
                except AuditUnavailable:
                    core.trail.forget_play(identity.user, rec, session)
                    raise
        else:
            checked = await core.require(request, "listener", "play", rec)
            if isinstance(checked, Response):
                return checked
        return await self._serve_audio(request, rec, download=False)

    async def download_wav(self, request: Request) -> Response:
        rec = self.core.rec(request)
        identity = await self.core.require(request, "listener", "download", rec)
        if isinstance(identity, Response):
            return identity
        await self.core.audit(request, identity, "download", rec, detail={"object": "audio.wav"})
        return await self._serve_audio(request, rec, download=True)

    async def _serve_audio(self, request: Request, rec: str, *, download: bool) -> Response:
        store = self.core.store
        key = wav_key(rec)
        try:
            size = await run_in_threadpool(store.size, key)
        except ObjectNotFoundError:
            return self.core.not_found(request, rec)
        headers = {"accept-ranges": "bytes", "cache-control": "private, no-store"}
        if download:
            headers["content-disposition"] = f'attachment; filename="{quote(rec)}.wav"'
        header = request.headers.get("range")
        if header and not download:
            start, end = parse_range(header, size)
            body = await run_in_threadpool(store.get_range, key, start, end)
            headers["content-range"] = f"bytes {start}-{start + len(body) - 1}/{size}"
            return Response(body, 206, headers=headers, media_type="audio/wav")
        headers["content-length"] = str(size)
        return StreamingResponse(
            iterate_in_threadpool(store.iter_bytes(key)),
            headers=headers,
            media_type="audio/wav",
        )
