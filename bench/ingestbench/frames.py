"""Wavix messages of the ingest benchmark, framed once: sending one is one ``write``.

Each stream's media JSON is a template (built with ``schemas.wavix.encode``) whose
base64 payload (960 bytes = 20 ms of L16/24000) is computed once, with
``sequence_number``, ``chunk`` and ``timestamp`` filled in per message; client
frames use an all-zero masking key (a server unmasks it like any other). The
connection is the harness's (bench/harness/wire.py); :meth:`Connection.write`
puts these frames on its transport as they are.
"""

from __future__ import annotations

import array
import math
import re
import sys
import uuid

from bench.harness.wire import Connection, frame_header, open_connection, ws_frame

TOKEN = "bench-token"
STREAM_PATH = f"/v1/stream?token={TOKEN}"
EVENT_TIME = "2025-01-01T00:00:00.000Z"
FRAME_MS = 20
FRAME_BYTES = 960
"""20 ms of L16/24000, as Wavix sends it."""

_SEQ, _CHUNK, _TS = 7777777771, 7777777772, 7777777773


def _audio_frame() -> bytes:
    """960 bytes: 20 ms of a 440 Hz tone, PCM16 little-endian, 24 kHz."""
    samples = array.array(
        "h", (int(8000 * math.sin(2 * math.pi * 440 * i / 24000)) for i in range(480))
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


class StreamMessages:
    """Every message one Wavix stream sends, framed; media from a template."""

    def __init__(self, call_id: str, stream_id: str, channel: str) -> None:
        from schemas import wavix

        self.call_id = call_id
        self.stream_id = stream_id
        self.tracks: tuple[str, ...] = (
            ("inbound", "outbound") if channel == "both" else (channel,)
        )
        self.opening = ws_frame(wavix.encode(wavix.Connected(event_time=EVENT_TIME))) + ws_frame(
            wavix.encode(
                wavix.Start(
                    call_id=call_id, stream_id=stream_id, stream_type="oneway",
                    channel=channel, sequence_number=1, event_time=EVENT_TIME,  # type: ignore[arg-type]
                )
            )
        )
        payload = _audio_frame()
        self._templates: dict[str, tuple[list[bytes], list[int], int]] = {}
        for track in self.tracks:
            raw = wavix.encode(
                wavix.Media(
                    call_id=call_id, stream_id=stream_id, sequence_number=_SEQ,
                    event_time=EVENT_TIME,
                    media=wavix.MediaBody(
                        payload=payload, chunk=_CHUNK, timestamp=_TS,
                        track=track if channel == "both" else None,  # type: ignore[arg-type]
                    ),
                )
            )
            pieces = re.split(rb"(7777777771|7777777772|7777777773)", raw)
            static = pieces[0::2]
            order = [{_SEQ: 0, _CHUNK: 1, _TS: 2}[int(m)] for m in pieces[1::2]]
            self._templates[track] = (static, order, sum(map(len, static)))

    def media(self, out: list[bytes], track: str, seq: int, chunk: int) -> None:
        """Append the parts of one framed media message to ``out``."""
        static, order, fixed = self._templates[track]
        values = (b"%d" % seq, b"%d" % chunk, b"%d" % ((chunk - 1) * FRAME_MS))
        out.append(frame_header(fixed + len(values[0]) + len(values[1]) + len(values[2])))
        out.append(static[0])
        for i, which in enumerate(order):
            out.append(values[which])
            out.append(static[i + 1])

    def stop(self, seq: int) -> bytes:
        from schemas import wavix

        return ws_frame(
            wavix.encode(
                wavix.Stop(call_id=self.call_id, stream_id=self.stream_id,
                           sequence_number=seq, event_time=EVENT_TIME)
            )
        )



class Stream:
    """One simulated Wavix stream on one connection."""

    def __init__(self, client: Connection, call_id: str, channel: str) -> None:
        self.client = client
        self.msgs = StreamMessages(call_id, uuid.uuid4().hex, channel)
        self.seq = 1  # start is 1
        self.chunk = 0  # per track; every track advances together
        self.sent = 0  # media messages written

    def opening(self) -> bytes:
        return self.msgs.opening

    def ticks(self, count: int) -> bytes:
        """``count`` frame times: one media message per track each."""
        out: list[bytes] = []
        msgs = self.msgs
        for _ in range(count):
            self.chunk += 1
            for track in msgs.tracks:
                self.seq += 1
                msgs.media(out, track, self.seq, self.chunk)
        self.sent += count * len(msgs.tracks)
        return b"".join(out)

    def ending(self) -> bytes:
        self.seq += 1
        return self.msgs.stop(self.seq)



async def connect(port: int, path: str = STREAM_PATH) -> Connection:
    """Open a WebSocket connection to ``path``; ConnectionError unless it was upgraded."""
    conn, status = await open_connection(f"ws://127.0.0.1:{port}{path}", within_s=60)
    if status != 101:
        raise ConnectionError(f"HTTP {status}")
    return conn
