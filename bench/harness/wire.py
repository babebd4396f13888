"""A lean WebSocket client: websockets' sans-I/O ``ClientProtocol`` on an asyncio transport.

The simulator's client (``websockets.asyncio``) costs ~38 µs per media message
on this machine (measured: 50 real-time two-track calls into a drain server,
1.88 CPU s for 50,000 messages); 400 real-time two-track calls are 40,000
messages a second, 1.5 of the 2 cores, which would starve the services under
test. Here the handshake, pings, close handshake and framing (random masks
included) are websockets' own sans-I/O code, but there is no task, lock or
future per message: sending a frame is ``send_text`` + one ``transport.write``,
~3 µs. The sender paces itself and watches ``paused`` (TCP backpressure).
:meth:`Connection.write` sends frames built beforehand, cheaper still.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

CLOSE_TIMEOUT_S = 10.0
"""After our close frame (or the server's), how long to wait for the TCP close."""


# Frames built beforehand (``Connection.write``) carry an all-zero masking key: a server
# unmasks them like any other. RFC 6455 wants unpredictable keys so that script in a
# browser cannot choose the bytes on the wire; a load generator has no such attacker, and
# skipping the XOR is most of what framing would cost it.
_ZERO_MASK = b"\x00\x00\x00\x00"
_HEADERS: dict[int, bytes] = {}


def frame_header(length: int, opcode: int = 0x1) -> bytes:
    """FIN + opcode, MASK bit, length, and an all-zero masking key."""
    if opcode == 0x1 and length in _HEADERS:
        return _HEADERS[length]
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    head += _ZERO_MASK
    if opcode == 0x1:
        _HEADERS[length] = head
    return head


def ws_frame(data: bytes, opcode: int = 0x1) -> bytes:
    """One complete client frame of ``data`` (text by default), for ``Connection.write``."""
    return frame_header(len(data), opcode) + data


class Connection(asyncio.Protocol):
    """One client connection. Create with :func:`open_connection`."""

    def __init__(self, url: str) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=2**20)
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[int] = loop.create_future()
        """HTTP status of the upgrade answer (101 when open)."""
        self.lost: asyncio.Future[None] = loop.create_future()
        self.paused = False
        self._writable: asyncio.Future[None] | None = None
        self.close_code: int | None = None
        """Close code the server sent, if any."""
        self.close_reason = ""

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self._events()
        self._flush()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._events()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.paused = False
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # -- API -----------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """True while frames may be sent (handshake done, no close, socket alive)."""
        return self.protocol.state is State.OPEN and not self.lost.done()

    def send_text(self, data: bytes, flush: bool = True) -> bool:
        """Send one text frame; False when the connection can no longer send.

        ``flush=False`` keeps the frame in the protocol's buffer until :meth:`flush`:
        frames of one tick then go out in one ``send()`` system call, which on
        loopback costs more than everything else here together.
        """
        try:
            self.protocol.send_text(data)
        except InvalidState:
            return False
        if flush:
            self._flush()
        return True

    def flush(self) -> None:
        """Write every frame queued with ``flush=False``."""
        self._flush()

    def write(self, frames: bytes) -> None:
        """Write bytes that are already client WebSocket frames, bypassing the protocol.

        The ingest benchmark's load generator frames its messages itself from templates
        (bench/ingestbench/frames.py): its cost per message stays a ``transport.write``.
        """
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(frames)

    async def writable(self) -> None:
        """Wait until the transport takes data again (or the connection is gone)."""
        while self.paused and not self.lost.done():
            self._writable = asyncio.get_running_loop().create_future()
            await self._writable

    async def close(self, code: int = 1000, within_s: float = 120.0) -> None:
        """Close handshake; wait up to ``within_s`` for the server to end the TCP connection.

        A backpressured server reads our close frame only after the frames before it,
        so the wait may be long; giving up aborts the socket.
        """
        if self.protocol.state is State.OPEN:
            with contextlib.suppress(InvalidState):
                self.protocol.send_close(code)
                self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), within_s)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- internals -----------------------------------------------------------------------

    def _events(self) -> None:
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if not self.handshake.done():
                    self.handshake.set_result(event.status_code)
            elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                rcvd = self.protocol.close_rcvd
                if rcvd is not None:
                    self.close_code, self.close_reason = rcvd.code, rcvd.reason

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        pending = self.protocol.data_to_send()
        if not pending:
            return
        if len(pending) > 1 and all(pending):
            pending = [b"".join(pending)]
        for data in pending:
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
        if self.protocol.close_expected():
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self._close_transport)

    def _close_transport(self) -> None:
        if self.transport is not None and not self.lost.done():
            self.transport.close()


async def open_connection(url: str, within_s: float = 30.0) -> tuple[Connection, int]:
    """Connect and do the opening handshake; returns (connection, HTTP status).

    Status 101 means open; otherwise (401, 503...) the connection is closed.
    Raises ``OSError`` or ``TimeoutError`` when no HTTP answer came.
    """
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(within_s):
        _, conn = await loop.create_connection(
            lambda: Connection(url), parts.hostname or "127.0.0.1", parts.port or 80
        )
        status = await conn.handshake
    if status != 101:
        conn.abort()
    return conn, status
