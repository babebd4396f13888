"""callrec.simulator against a tiny WebSocket server that records every frame it gets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection as SyncConnection
from websockets.sync.server import serve as serve_sync

from callrec import cli
from callrec.simulator import (
    CallReport,
    CallsFailed,
    ConnectFailed,
    Faults,
    SimulatedCall,
    StreamRejected,
    build_calls,
    connection_steps,
    run_calls,
    stream_call,
    with_token,
)
from infra.audio import encode_pcm, load_audio
from schemas import wavix
from schemas.codecs import L16_24K, PCMA_8K, PCMU_8K, Codec
from schemas.errors import (
    InvalidBase64Error,
    MalformedJSONError,
    ProtocolError,
    UnknownEventError,
)

DATA = Path(__file__).parents[1] / "data"
STEREO = DATA / "stereo_diarization.wav"


# -- a server that records ---------------------------------------------------------------


@dataclass
class Connection:
    """Everything one client connection sent."""

    path: str
    messages: list[str | bytes] = field(default_factory=list)
    close_code: int | None = None
    """Code of the client's close frame; None when the TCP connection just ended."""

    def events(self, codec: Codec = L16_24K) -> list[wavix.Event]:
        return [wavix.parse(m, codec) for m in self.messages]

    def valid_events(self, codec: Codec = L16_24K) -> list[wavix.Event]:
        events = []
        for message in self.messages:
            with contextlib.suppress(ProtocolError):
                events.append(wavix.parse(message, codec))
        return events

    def media(self, codec: Codec = L16_24K) -> list[wavix.Media]:
        return [e for e in self.valid_events(codec) if isinstance(e, wavix.Media)]


class RecordingServer:
    """Accepts WebSocket connections and keeps their frames.

    ``token``: answer 401 without it. ``close_after``: close each connection with
    ``close_code`` after that many messages.
    """

    def __init__(
        self, token: str | None = None, close_after: int | None = None, close_code: int = 1008
    ) -> None:
        self.token = token
        self.close_after = close_after
        self.close_code = close_code
        self.connections: list[Connection] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def _route(self, ws: ServerConnection, request: Request) -> Response | None:
        if self.token is not None and f"token={self.token}" not in request.path:
            return ws.respond(401, "missing or invalid token\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn = Connection(ws.request.path if ws.request else "")
        self.connections.append(conn)
        try:
            async for message in ws:
                conn.messages.append(message)
                if self.close_after is not None and len(conn.messages) >= self.close_after:
                    await ws.close(self.close_code, "enough")
                    break
        except ConnectionClosed:
            pass
        received = ws.protocol.close_rcvd
        conn.close_code = received.code if received is not None else None

    async def settled(self) -> None:
        """Wait until every handler has read all its connection sent."""
        while any(not t.done() for t in self._handlers):
            await asyncio.wait(self._handlers)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RecordingServer]:
        async with serve(
            self._handle, "127.0.0.1", 0, process_request=self._route, compression=None
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            yield self
            await self.settled()


@pytest.fixture
async def server() -> AsyncIterator[RecordingServer]:
    async with RecordingServer().running() as running:
        yield running


@pytest.fixture(scope="module")
def stereo_1s() -> np.ndarray:
    """1 s of the stereo test file at 24 kHz (left and right differ)."""
    return load_audio(STEREO, 24000)[:, 24000:48000]


def make_call(samples: np.ndarray, layout: str = "both", codec: Codec = L16_24K) -> SimulatedCall:
    tracks = {"inbound": encode_pcm(samples[0], codec), "outbound": encode_pcm(samples[1], codec)}
    return SimulatedCall("call-1", tracks, layout)  # type: ignore[arg-type]


def payloads(media: list[wavix.Media], track: str) -> bytes:
    return b"".join(m.media.payload for m in media if m.media.track == track)


def chunks(media: list[wavix.Media], track: str) -> list[int]:
    return [m.media.chunk for m in media if m.media.track == track]


def seq_numbers(events: list[wavix.Event] | list[wavix.Media]) -> list[int]:
    """The sequence numbers of events that must have one."""
    numbers = [getattr(e, "sequence_number", None) for e in events]
    assert None not in numbers
    return numbers  # type: ignore[return-value]


# -- the messages ----------------------------------------------------------------------


async def test_both_layout_sends_wavix_messages_in_order(
    server: RecordingServer, stereo_1s: np.ndarray
) -> None:
    call = make_call(stereo_1s)
    report = await stream_call(server.url, call, realtime=False)
    await server.settled()

    [conn] = server.connections
    assert all(isinstance(m, str) for m in conn.messages), "Wavix sends text frames"
    events = conn.events()
    assert isinstance(events[0], wavix.Connected)
    start = events[1]
    assert isinstance(start, wavix.Start)
    assert (start.call_id, start.stream_type, start.channel) == ("call-1", "oneway", "both")
    assert start.sequence_number == 1
    assert all(isinstance(e, wavix.Media) for e in events[2:-1])
    assert isinstance(events[-1], wavix.Stop)
    assert conn.close_code == 1000

    media = [e for e in events if isinstance(e, wavix.Media)]
    # Per 20 ms: the inbound frame, then the outbound frame.
    assert [m.media.track for m in media[:4]] == ["inbound", "outbound", "inbound", "outbound"]
    assert chunks(media, "inbound") == chunks(media, "outbound") == list(range(1, 51))
    assert [m.media.timestamp for m in media[::2]] == [20 * i for i in range(50)]
    assert seq_numbers(events[1:]) == list(range(1, 103))
    assert {m.stream_id for m in media} == {start.stream_id}
    assert payloads(media, "inbound") == call.tracks["inbound"]
    assert payloads(media, "outbound") == call.tracks["outbound"]

    [stream] = report.streams
    assert stream.stream_id == start.stream_id
    assert stream.sent_chunks == {"inbound": list(range(1, 51)), "outbound": list(range(1, 51))}
    assert stream.dropped == {"inbound": [], "outbound": []}
    assert (stream.completed, stream.close_code, stream.malformed_sent) == (True, 1000, 0)


async def test_event_times_are_iso_8601_with_milliseconds(
    server: RecordingServer, stereo_1s: np.ndarray
) -> None:
    await stream_call(server.url, make_call(stereo_1s[:, :4800]), realtime=False)
    await server.settled()
    events = server.connections[0].events()
    times = [datetime.fromisoformat(e.event_time) for e in events if e.event_time]
    assert len(times) == len(events)
    assert all(e.event_time and e.event_time.endswith("Z") for e in events)
    assert all(len(e.event_time.split(".")[1]) == 4 for e in events if e.event_time)  # "123Z"
    assert times == sorted(times)
    assert (times[-1] - times[1]).total_seconds() == pytest.approx(0.2)


async def test_oneway_layout_uses_one_connection_per_track(
    server: RecordingServer, stereo_1s: np.ndarray
) -> None:
    call = make_call(stereo_1s, layout="oneway")
    report = await stream_call(server.url, call, realtime=False)
    await server.settled()

    assert len(server.connections) == 2
    starts = {}
    for conn in server.connections:
        events = conn.events()
        start = events[1]
        assert isinstance(events[0], wavix.Connected)
        assert isinstance(start, wavix.Start)
        assert isinstance(events[-1], wavix.Stop)
        starts[start.channel] = start
        media = [e for e in events if isinstance(e, wavix.Media)]
        assert {m.media.track for m in media} == {start.channel}
        assert chunks(media, start.channel) == list(range(1, 51))
        assert seq_numbers(events[1:]) == list(range(1, 53))
        track = start.channel
        assert track != "both"
        assert payloads(media, track) == call.tracks[track]
    assert set(starts) == {"inbound", "outbound"}
    assert starts["inbound"].stream_id != starts["outbound"].stream_id
    assert {s.call_id for s in starts.values()} == {"call-1"}
    # Both streams start together at the gateway.
    assert starts["inbound"].event_time == starts["outbound"].event_time
    assert [s.channel for s in report.streams] == ["inbound", "outbound"]
    assert [s.stream_id for s in report.streams] == [
        starts["inbound"].stream_id,
        starts["outbound"].stream_id,
    ]
    assert report.completed


@pytest.mark.parametrize("codec", [PCMU_8K, PCMA_8K, L16_24K])
async def test_payloads_are_the_source_audio_in_the_codec(
    server: RecordingServer, stereo_1s: np.ndarray, codec: Codec
) -> None:
    samples = load_audio(STEREO, codec.sample_rate)[:, : codec.sample_rate * 1010 // 1000]
    call = make_call(samples, codec=codec)
    await stream_call(server.url, call, codec=codec, realtime=False)
    await server.settled()
    media = server.connections[0].media(codec)
    sizes = [len(m.media.payload) for m in media if m.media.track == "inbound"]
    assert sizes == [codec.frame_bytes()] * 50 + [codec.frame_bytes() // 2]  # 10 ms last
    assert payloads(media, "inbound") == call.tracks["inbound"]
    assert payloads(media, "outbound") == call.tracks["outbound"]


async def test_a_single_track_goes_on_a_stream_of_its_channel(
    server: RecordingServer, stereo_1s: np.ndarray
) -> None:
    call = SimulatedCall("call-1", {"outbound": encode_pcm(stereo_1s[1], L16_24K)}, "both")
    report = await stream_call(server.url, call, realtime=False)
    await server.settled()
    events = server.connections[0].events()
    assert isinstance(events[1], wavix.Start)
    assert events[1].channel == "outbound"
    assert report.streams[0].sent_chunks == {"outbound": list(range(1, 51))}


# -- faults ------------------------------------------------------------------------------


async def test_drop_withholds_chunks_and_reports_them(
    server: RecordingServer, stereo_1s: np.ndarray
) -> None:
    report = await stream_call(
        server.url, make_call(stereo_1s), realtime=False, faults=Faults(drop=0.2, seed=1)
    )
    await server.settled()
    media = server.connections[0].media()
    [stream] = report.streams
    for track in ("inbound", "outbound"):
        received = chunks(media, track)
        assert stream.dropped[track], "20% of 50 chunks: some must be dropped"
        assert received == stream.sent_chunks[track]
        assert sorted(received + stream.dropped[track]) == list(range(1, 51))
    # A dropped chunk keeps its sequence number: the receiver sees a gap.
    numbers = seq_numbers(media)
    assert numbers == sorted(numbers)
    assert len(numbers) < numbers[-1] - 1


async def test_duplicate_sends_chunks_twice(server: RecordingServer, stereo_1s: np.ndarray) -> None:
    report = await stream_call(
        server.url, make_call(stereo_1s), realtime=False, faults=Faults(duplicate=0.2, seed=2)
    )
    await server.settled()
    media = server.connections[0].media()
    [stream] = report.streams
    for track in ("inbound", "outbound"):
        received = chunks(media, track)
        assert received == stream.sent_chunks[track]
        assert len(received) > 50
        assert sorted(set(received)) == list(range(1, 51))
    messages = [m for m in server.connections[0].messages if '"media"' in str(m)]
    repeats = [a for a, b in itertools.pairwise(messages) if a == b]
    assert len(repeats) == len(media) - 100, "a duplicate is the same message again"


async def test_reorder_swaps_neighbouring_chunks(
    server: RecordingServer, stereo_1s: np.ndarray
) -> None:
    call = make_call(stereo_1s)
    report = await stream_call(server.url, call, realtime=False, faults=Faults(reorder=0.2, seed=3))
    await server.settled()
    media = server.connections[0].media()
    [stream] = report.streams
    for track in ("inbound", "outbound"):
        received = chunks(media, track)
        assert received == stream.sent_chunks[track]
        assert sorted(received) == list(range(1, 51))
        assert received != sorted(received)
        swaps = [(a, b) for a, b in itertools.pairwise(received) if a > b]
        assert all(a == b + 1 for a, b in swaps), "only neighbours are swapped"
        # Each chunk keeps its own payload, timestamp and sequence number.
        by_chunk = {m.media.chunk: m for m in media if m.media.track == track}
        assert b"".join(by_chunk[c].media.payload for c in range(1, 51)) == call.tracks[track]
        assert all(m.media.timestamp == (c - 1) * 20 for c, m in by_chunk.items())
    numbers = seq_numbers(media)
    assert numbers != sorted(numbers)
    assert sorted(numbers) == list(range(2, 102))


async def test_malformed_messages_are_extra_and_fail_to_parse(
    server: RecordingServer, stereo_1s: np.ndarray
) -> None:
    call = make_call(stereo_1s)
    report = await stream_call(
        server.url, call, realtime=False, faults=Faults(malformed=0.3, seed=4)
    )
    await server.settled()
    conn = server.connections[0]
    errors: list[type[ProtocolError]] = []
    for message in conn.messages:
        try:
            wavix.parse(message)
        except ProtocolError as exc:
            errors.append(type(exc))
    [stream] = report.streams
    assert stream.malformed_sent == len(errors) >= 3
    assert set(errors) == {MalformedJSONError, InvalidBase64Error, UnknownEventError}
    assert errors[:3] == [MalformedJSONError, InvalidBase64Error, UnknownEventError]
    # No chunk was replaced: the valid messages still carry all the audio.
    media = conn.media()
    assert payloads(media, "inbound") == call.tracks["inbound"]
    assert payloads(media, "outbound") == call.tracks["outbound"]
    assert isinstance(conn.valid_events()[-1], wavix.Stop)


async def test_disconnect_after_aborts_without_stop_or_close_frame(
    server: RecordingServer, stereo_1s: np.ndarray
) -> None:
    report = await stream_call(
        server.url,
        make_call(stereo_1s, layout="oneway"),
        realtime=False,
        faults=Faults(disconnect_after=7),
    )
    await server.settled()
    assert len(server.connections) == 2
    for conn, stream in zip(server.connections, report.streams, strict=True):
        events = conn.events()
        assert sum(isinstance(e, wavix.Media) for e in events) == 7
        assert not any(isinstance(e, wavix.Stop) for e in events)
        assert conn.close_code is None, "no close frame"
        assert stream.completed is False
        assert stream.close_code is None
        assert stream.media_sent == 7
        assert "aborted" in stream.close_reason


async def test_disconnect_after_zero_aborts_right_after_start(
    server: RecordingServer, stereo_1s: np.ndarray
) -> None:
    await stream_call(
        server.url, make_call(stereo_1s), realtime=False, faults=Faults(disconnect_after=0)
    )
    await server.settled()
    events = server.connections[0].events()
    assert [type(e) for e in events] == [wavix.Connected, wavix.Start]


async def test_string_numbers_are_json_strings(
    server: RecordingServer, stereo_1s: np.ndarray
) -> None:
    call = make_call(stereo_1s[:, :4800])
    await stream_call(server.url, call, realtime=False, faults=Faults(string_numbers=True))
    await server.settled()
    messages = [json.loads(m) for m in server.connections[0].messages]
    start, first = messages[1], messages[2]
    assert start["sequence_number"] == "1"
    assert first["sequence_number"] == "2"
    assert (first["media"]["chunk"], first["media"]["timestamp"]) == ("1", "0")
    assert messages[-1]["sequence_number"] == str(len(messages) - 1)
    # Still valid Wavix: the parser reads them as numbers.
    media = server.connections[0].media()
    assert chunks(media, "inbound") == list(range(1, 11))
    assert payloads(media, "inbound") == call.tracks["inbound"]


async def test_faults_are_reproducible(server: RecordingServer, stereo_1s: np.ndarray) -> None:
    call = make_call(stereo_1s, layout="oneway")

    async def run(seed: int) -> list[tuple]:
        faults = Faults(drop=0.1, duplicate=0.1, reorder=0.1, malformed=0.1, seed=seed)
        report = await stream_call(server.url, call, realtime=False, faults=faults)
        return [(s.sent_chunks, s.dropped, s.malformed_sent) for s in report.streams]

    first, again, other = await run(5), await run(5), await run(6)
    assert first == again
    assert first != other


@given(
    counts=st.fixed_dictionaries({"inbound": st.integers(0, 60), "outbound": st.integers(0, 60)}),
    probabilities=st.tuples(*[st.sampled_from([0.0, 0.1, 0.5, 1.0])] * 4),
    seed=st.integers(0, 2**32),
)
def test_every_chunk_is_sent_or_dropped(
    counts: dict, probabilities: tuple[float, ...], seed: int
) -> None:
    drop, duplicate, reorder, malformed = probabilities
    faults = Faults(drop=drop, duplicate=duplicate, reorder=reorder, malformed=malformed)
    steps = list(connection_steps(counts, faults, random.Random(seed)))
    assert [s.kind for s in steps[:2]] == ["connected", "start"]
    assert steps[-1].kind == "stop"
    assert [s.tick for s in steps] == sorted(s.tick for s in steps), "never sent early"
    for track, count in counts.items():
        sent = [s.chunk for s in steps if s.kind == "media" and s.track == track]
        dropped = [s.chunk for s in steps if s.kind == "drop" and s.track == track]
        assert sorted(set(sent) | set(dropped)) == list(range(1, count + 1))
        assert not set(sent) & set(dropped)
        assert all(sent.count(c) <= 2 for c in set(sent))
        # Reordering only swaps neighbours: no chunk moves more than one place.
        unique = list(dict.fromkeys(sent))
        in_order = sorted(unique)
        assert all(abs(i - in_order.index(c)) <= 1 for i, c in enumerate(unique))


# -- pacing ----------------------------------------------------------------------------


async def test_realtime_takes_as_long_as_the_audio(
    server: RecordingServer, stereo_1s: np.ndarray
) -> None:
    call = make_call(stereo_1s[:, :12000])  # 0.5 s
    started = time.perf_counter()
    await stream_call(server.url, call, realtime=True)
    assert time.perf_counter() - started >= 0.5 - 0.05


# -- how it ends -----------------------------------------------------------------------


async def test_http_rejection_raises_with_the_status(stereo_1s: np.ndarray) -> None:
    async with RecordingServer(token="s3cret").running() as server:
        call = make_call(stereo_1s[:, :4800])
        with pytest.raises(StreamRejected) as caught:
            await stream_call(server.url, call, realtime=False, token="wrong")
        assert caught.value.status == 401
        assert "invalid token" in str(caught.value)

        report = await stream_call(server.url, call, realtime=False, token="s3cret")
        assert report.completed
        assert "token=s3cret" in server.connections[-1].path


async def test_run_calls_rejection_is_raised_after_the_other_calls(
    stereo_1s: np.ndarray,
) -> None:
    async with RecordingServer(token="s3cret").running() as server:
        good = make_call(stereo_1s[:, :4800])
        with pytest.raises(CallsFailed) as caught:
            await run_calls(server.url, [good, good], realtime=False, token="nope")
        assert caught.value.statuses == {401}
        assert caught.value.reports == []
        assert server.connections == []


async def test_server_close_code_is_reported_not_raised(stereo_1s: np.ndarray) -> None:
    async with RecordingServer(close_after=5, close_code=1008).running() as server:
        report = await stream_call(server.url, make_call(stereo_1s), realtime=False)
    [stream] = report.streams
    assert stream.close_code == 1008
    assert stream.close_reason == "enough"
    assert stream.completed is False
    assert 3 <= stream.media_sent < 100


async def test_nothing_listening_is_connect_failed(stereo_1s: np.ndarray) -> None:
    async with RecordingServer().running() as server:
        url = server.url
    with pytest.raises(ConnectFailed, match="cannot connect"):
        await stream_call(url, make_call(stereo_1s[:, :4800]), realtime=False)


async def test_run_calls_streams_every_call(server: RecordingServer) -> None:
    calls = build_calls(STEREO, calls=3, layout="oneway", call_id_prefix="load")
    calls = [
        SimulatedCall(c.call_id, {t: pcm[:9600] for t, pcm in c.tracks.items()}, c.layout)
        for c in calls
    ]
    done: list[str] = []
    reports = await run_calls(
        server.url, calls, realtime=False, concurrency=2, on_call_done=done.append
    )
    await server.settled()
    assert [r.call_id for r in reports] == ["load-1", "load-2", "load-3"]
    assert sorted(done) == ["load-1", "load-2", "load-3"]
    assert all(isinstance(r, CallReport) and r.completed for r in reports)
    assert len(server.connections) == 6
    starts = [c.events()[1] for c in server.connections]
    assert len({s.stream_id for s in starts if isinstance(s, wavix.Start)}) == 6


# -- value types and helpers -----------------------------------------------------------


def test_faults_reject_impossible_values() -> None:
    with pytest.raises(ValueError, match="probability"):
        Faults(drop=1.5)
    with pytest.raises(ValueError, match="disconnect_after"):
        Faults(disconnect_after=-1)


def test_a_call_needs_known_tracks() -> None:
    with pytest.raises(ValueError, match="no track"):
        SimulatedCall("c", {})
    with pytest.raises(ValueError, match="unknown tracks"):
        SimulatedCall("c", {"sideways": b""})  # type: ignore[dict-item]


def test_with_token_keeps_the_rest_of_the_url() -> None:
    assert with_token("ws://h:1/v1/stream", "a b") == "ws://h:1/v1/stream?token=a+b"
    assert with_token("ws://h/v1/stream?x=1&token=old", "new") == "ws://h/v1/stream?x=1&token=new"
    assert with_token("ws://h/v1/stream", None) == "ws://h/v1/stream"


# -- build_calls -----------------------------------------------------------------------


def test_build_calls_stereo_left_is_inbound_right_is_outbound() -> None:
    audio = load_audio(STEREO, 24000)
    calls = build_calls(STEREO, calls=12, layout="oneway", call_id_prefix="x")
    assert [c.call_id for c in calls[:2]] == ["x-01", "x-02"]
    assert calls[-1].call_id == "x-12"
    assert all(c.layout == "oneway" for c in calls)
    assert calls[0].tracks["inbound"] == encode_pcm(audio[0], L16_24K)
    assert calls[0].tracks["outbound"] == encode_pcm(audio[1], L16_24K)


@pytest.mark.parametrize(("channel", "index"), [("inbound", 0), ("outbound", 1)])
def test_build_calls_one_channel_of_a_stereo_file(channel: str, index: int) -> None:
    audio = load_audio(STEREO, 8000)
    [call] = build_calls(STEREO, channel=channel, codec=PCMU_8K)  # type: ignore[arg-type]
    assert call.tracks == {channel: encode_pcm(audio[index], PCMU_8K)}


def test_build_calls_mono_file(tmp_path: Path) -> None:
    import wave

    tone = (1000 * np.sin(np.arange(8000) / 5)).astype("<i2")
    path = tmp_path / "mono.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(tone.tobytes())
    [both] = build_calls(path, codec=PCMA_8K)
    assert both.tracks["inbound"] == both.tracks["outbound"] == encode_pcm(tone, PCMA_8K)
    [inbound] = build_calls(path, channel="inbound", codec=PCMA_8K)
    assert inbound.tracks == {"inbound": both.tracks["inbound"]}


# -- the command line ------------------------------------------------------------------


@contextlib.contextmanager
def threaded_server(token: str | None = None) -> Iterator[tuple[str, list[str]]]:
    """A sync WebSocket server in a thread, for the CLI (which runs its own event loop)."""
    received: list[str] = []

    def handler(ws: SyncConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            for message in ws:
                received.append(str(message))

    def route(ws: SyncConnection, request: Request) -> Response | None:
        if token is not None and f"token={token}" not in request.path:
            return ws.respond(401, "missing or invalid token\n")
        return None

    with serve_sync(handler, "127.0.0.1", 0, process_request=route) as srv:
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"ws://127.0.0.1:{srv.socket.getsockname()[1]}/v1/stream", received
        finally:
            srv.shutdown()
            thread.join()


def test_cli_simulate_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    with threaded_server(token="t0k") as (url, received):
        code = cli.main([
            "simulate", str(STEREO), "--url", url, "--token", "t0k", "--fast", "--calls", "2",
            "--codec", "PCMU/8000", "--drop", "0.1", "--seed", "3", "--call-id-prefix", "cli",
            "--json",
        ])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["calls"] == 2
    assert out["calls_failed"] == 0
    assert out["streams_completed"] == 2
    assert out["close_codes"] == {"1000": 2}
    assert out["dropped"] > 0
    assert out["media_sent"] == 2 * 2 * 250 - out["dropped"]
    assert {r["call_id"] for r in out["reports"]} == {"cli-1", "cli-2"}
    assert sum('"event":"media"' in m for m in received) == out["media_sent"]


def test_cli_simulate_rejected_exits_non_zero(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLREC_SIMULATE_TOKEN", "wrong")
    with threaded_server(token="t0k") as (url, received):
        code = cli.main(["simulate", str(STEREO), "--url", url, "--fast"])
    captured = capsys.readouterr()
    assert code == 2
    assert received == []
    assert "1 failed" in captured.out
    assert "HTTP 401" in captured.err


def test_cli_simulate_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["simulate", str(tmp_path / "absent.flac"), "--fast"])
    assert code == 2
    assert "cannot open" in capsys.readouterr().err
