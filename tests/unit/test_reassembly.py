"""Reassembly of recordings: order, duplicates, gaps, alignment, conflicts, completeness.

The properties of the issue: any permutation and duplication of the chunks
gives byte-identical WAVs; dropped chunks become silence at exactly their
offsets; streams are aligned by their start times; RAM stays within the
reorder window however long the call.
"""

from __future__ import annotations

import hashlib
import random
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.wav import write_wav
from schemas import envelope
from schemas.codecs import L16_16K, PCMU_8K, Codec
from workers.recorder.errors import FinalizedError, WrongCallError
from workers.recorder.reassembly import RecordingAssembler, RecordingResult
from workers.recorder.streams import event_time_ns

CALL = "call-1"
T0_NS = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z
FRAME_MS = 20
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def payload(stream: str, chunk: int, codec: Codec = L16_16K, ms: int = FRAME_MS) -> bytes:
    """Distinct, recognizable audio per (stream, chunk); never all silence."""
    n = codec.bytes_for_ms(ms)
    seed = hashlib.sha256(f"{stream}/{chunk}".encode()).digest()
    return (seed * (n // len(seed) + 1))[:n]


def media(
    stream: str,
    chunk: int,
    ts: int | None = None,
    *,
    track: str = "inbound",
    data: bytes | None = None,
    codec: Codec = L16_16K,
    received_ns: int | None = None,
) -> envelope.MediaChunk:
    ts = chunk * FRAME_MS if ts is None else ts
    return envelope.MediaChunk(
        call_id=CALL,
        stream_id=stream,
        track=track,  # type: ignore[arg-type]
        chunk=chunk,
        timestamp_ms=ts,
        codec=codec.id,
        payload=payload(stream, chunk, codec) if data is None else data,
        received_ns=T0_NS + ts * 1_000_000 + 5_000_000 if received_ns is None else received_ns,
    )


def started(
    stream: str,
    channel: str = "inbound",
    *,
    event_time: str | None = "2024-05-01T12:00:00.000Z",
    received_ns: int = T0_NS,
    codec: Codec = L16_16K,
    stream_type: str = "oneway",
    connection: str = "conn-1",
) -> envelope.StreamStarted:
    return envelope.StreamStarted(
        call_id=CALL,
        stream_id=stream,
        stream_type=stream_type,  # type: ignore[arg-type]
        channel=channel,  # type: ignore[arg-type]
        codec=codec.id,
        ingest_pod="ingest-0",
        connection_id=connection,
        received_ns=received_ns,
        event_time=event_time,
    )


def closed(
    stream: str, chunks: int, reason: str = "stop", detail: str = "stop received"
) -> envelope.StreamClosed:
    return envelope.StreamClosed(
        call_id=CALL,
        stream_id=stream,
        reason=reason,  # type: ignore[arg-type]
        detail=detail,
        ingest_pod="ingest-0",
        connection_id="conn-1",
        received_ns=T0_NS + 10**12,
        chunks=chunks,
        invalid=0,
    )


def assemble(
    records: list[envelope.Record], tmp: Path, *, window_ms: int = 2000, timed_out: bool = False
) -> tuple[RecordingResult, bytes]:
    """Feed records, finalize, write the WAV; return the result and the WAV bytes."""
    asm = RecordingAssembler(CALL, tmp / "spool", window_ms=window_ms)
    for record in records:
        asm.add(record)
    result = asm.finalize(timed_out=timed_out)
    out = tmp / "out.wav"
    write_wav(out, result.codec, result.track_paths, result.track_lengths)
    data = out.read_bytes()
    asm.discard()
    assert not list((tmp / "spool").iterdir()), "discard leaves no files"
    return result, data


def frames(wav_bytes: bytes, tmp: Path) -> tuple[int, np.ndarray]:
    """(channels, samples as an array of shape (frames, channels)) of an L16 WAV."""
    path = tmp / "parse.wav"
    path.write_bytes(wav_bytes)
    with wave.open(str(path)) as w:
        channels = w.getnchannels()
        data = w.readframes(w.getnframes())
    return channels, np.frombuffer(data, "<i2").reshape(-1, channels)


def whole_call(n: int) -> list[envelope.Record]:
    """A clean two-stream call: inbound and outbound, n chunks each, both stopped."""
    return [
        started("s-in", "inbound"),
        started("s-out", "outbound"),
        *(media("s-in", i) for i in range(n)),
        *(media("s-out", i, track="outbound") for i in range(n)),
        closed("s-in", n),
        closed("s-out", n),
    ]


# -- the properties of the issue --------------------------------------------------------


@PROPERTY
@given(data=st.data(), n=st.integers(1, 40), window_ms=st.sampled_from([10, 60, 2000]))
def test_any_permutation_and_duplication_gives_the_same_wav(data, n, window_ms):
    records = whole_call(n)
    extra = data.draw(st.lists(st.sampled_from(records), max_size=n), label="duplicates")
    shuffled = data.draw(st.permutations(records + extra), label="arrival order")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        expected, expected_wav = assemble(records, tmp, window_ms=window_ms)
        got, got_wav = assemble(shuffled, tmp, window_ms=window_ms)
    assert got_wav == expected_wav
    assert got.complete and expected.complete
    assert sum(t.counts.duplicates for t in got.tracks) == sum(
        isinstance(r, envelope.MediaChunk) for r in extra
    )


@PROPERTY
@given(data=st.data(), n=st.integers(2, 60))
def test_dropped_chunks_become_silence_at_their_offsets(data, n):
    kept = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1), label="kept"))
    order = data.draw(st.permutations(kept), label="arrival order")
    records = [started("s-in"), *(media("s-in", i) for i in order), closed("s-in", len(kept))]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result, wav_bytes = assemble(records, tmp, window_ms=40)
        channels, samples = frames(wav_bytes, tmp)
    frame = L16_16K.bytes_for_ms(FRAME_MS)
    expected = bytearray((kept[-1] + 1) * frame)
    for i in kept:
        expected[i * frame : (i + 1) * frame] = payload("s-in", i)
    assert channels == 1
    assert samples.tobytes() == bytes(expected)
    inside = set(range(kept[0], kept[-1] + 1)) - set(kept)
    holes = sum(1 for i in inside if i - 1 not in inside)
    (track,) = result.tracks
    assert track.counts.gaps == holes
    assert track.counts.gap_ms == len(inside) * FRAME_MS
    assert track.counts.lead_ms == kept[0] * FRAME_MS
    assert result.streams[0].missing_chunks == len(inside)
    assert result.complete == (not inside)
    if inside:
        assert f"stream s-in: gaps, {len(inside)} chunks missing" in result.reason


CONFLICTING = st.lists(
    st.tuples(
        st.integers(0, 12),  # chunk number
        st.integers(0, 30).map(lambda t: t * 5),  # timestamp, not on the 20 ms grid
        st.sampled_from([5, 10, 20, 30]),  # duration in ms
        st.sampled_from(["a", "b"]),  # payload variant
    ),
    min_size=1,
    max_size=30,
)


@PROPERTY
@given(data=st.data(), chunks=CONFLICTING, window_ms=st.sampled_from([5, 30, 2000]))
def test_conflicts_resolve_the_same_in_any_order(data, chunks, window_ms):
    """Overlaps, same number at two timestamps, same number with two payloads."""
    records = [media("s-in", c, ts, data=payload(f"s-in{v}", c, ms=ms)) for c, ts, ms, v in chunks]
    shuffled = data.draw(st.permutations(records))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        expected, expected_wav = assemble([started("s-in"), *records], tmp, window_ms=window_ms)
        got, got_wav = assemble([*shuffled, started("s-in")], tmp, window_ms=window_ms)
    assert got_wav == expected_wav
    counts, want = got.tracks[0].counts, expected.tracks[0].counts
    assert (counts.chunks, counts.conflicting_duplicates, counts.overlaps, counts.gap_ms) == (
        want.chunks,
        want.conflicting_duplicates,
        want.overlaps,
        want.gap_ms,
    )
    assert counts.chunks == len({c for c, *_ in chunks})


def test_tracks_on_streams_40_ms_apart_are_offset_by_40_ms(tmp_path):
    n = 10
    records = [
        started("s-in", "inbound", event_time="2024-05-01T12:00:00.000Z", received_ns=T0_NS),
        *(media("s-in", i) for i in range(n)),
        # The later stream's start arrives last, after every chunk of both streams; its
        # receive time is off by 7 ms (another pod): the Wavix event times decide.
        *(media("s-out", i, track="outbound") for i in range(n)),
        started(
            "s-out",
            "outbound",
            event_time="2024-05-01T12:00:00.040Z",
            received_ns=T0_NS + 47_000_000,
        ),
        closed("s-in", n),
        closed("s-out", n),
    ]
    result, wav_bytes = assemble(records, tmp_path)
    channels, samples = frames(wav_bytes, tmp_path)
    assert channels == 2
    assert result.clock == "event_time"
    assert [s.offset_ms for s in result.streams] == [0, 40]
    lead = L16_16K.sample_rate * 40 // 1000
    inbound = b"".join(payload("s-in", i) for i in range(n))
    outbound = b"".join(payload("s-out", i) for i in range(n))
    assert samples[: n * 320, 0].tobytes() == inbound
    assert not samples[n * 320 :, 0].any(), "inbound padded with silence to the longest"
    assert not samples[:lead, 1].any()
    assert samples[lead:, 1].tobytes() == outbound
    assert result.duration_ms == n * FRAME_MS + 40
    assert result.tracks[1].counts.lead_ms == 40
    assert result.tracks[1].counts.gaps == 0


def test_the_stream_that_started_first_defines_time_zero_even_if_its_start_comes_last(tmp_path):
    records = [
        started("s-in", "inbound", event_time="2024-05-01T12:00:00.100Z", received_ns=T0_NS),
        media("s-in", 0),
        media("s-out", 0, track="outbound"),
        started("s-out", "outbound", event_time="2024-05-01T12:00:00.060Z", received_ns=T0_NS),
    ]
    result, _ = assemble(records, tmp_path)
    assert {s.stream_id: s.offset_ms for s in result.streams} == {"s-out": 0, "s-in": 40}
    assert [t.counts.lead_ms for t in result.tracks] == [40, 0]


@pytest.mark.parametrize(
    ("event_in", "event_out"),
    [
        (None, "2024-05-01T12:00:00.040Z"),  # one stream lacks it: one clock for all
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:01Z"),  # whole seconds: too coarse
    ],
)
def test_receive_times_align_streams_without_precise_event_times(tmp_path, event_in, event_out):
    records = [
        started("s-in", "inbound", event_time=event_in, received_ns=T0_NS),
        started("s-out", "outbound", event_time=event_out, received_ns=T0_NS + 25_000_000),
        media("s-in", 0),
        media("s-out", 0, track="outbound"),
    ]
    result, _ = assemble(records, tmp_path)
    assert result.clock == "received"
    assert [s.offset_ms for s in result.streams] == [0, 25]
    assert result.start_ns == T0_NS


def test_ram_stays_within_the_window_while_a_long_track_spills(tmp_path):
    """Memory bound: buffered audio never exceeds the window, however long the call."""
    rng = random.Random(7)
    n = 3000  # 60 s of 20 ms chunks
    order = list(range(n))
    for i in range(0, n - 4, 4):  # local reordering, and now and then a very late chunk
        rng.shuffle(order[i : i + 4] if rng.random() < 0.5 else order[i : i + 1])
    for _ in range(30):
        order.append(order.pop(rng.randrange(n - 200)))
    asm = RecordingAssembler(CALL, tmp_path / "spool", window_ms=100)
    asm.add(started("s-in"))
    peak = 0
    for i in order:
        asm.add(media("s-in", i))
        peak = max(peak, asm.buffered_bytes)
    spool = asm._streams["s-in"].spools["inbound"]
    assert spool.ram_limit_bytes == L16_16K.bytes_for_ms(100) * 3 // 2
    assert peak <= spool.ram_limit_bytes
    assert spool.seen._starts.tolist() == [0]  # one run of chunk numbers, whatever n
    on_disk = sum(p.stat().st_size for p in (tmp_path / "spool").iterdir())
    assert on_disk >= n * 640 - spool.ram_limit_bytes - 64 * 1024  # minus one file buffer
    asm.add(closed("s-in", n))
    result = asm.finalize()
    assert result.complete, result.reason
    expected = b"".join(payload("s-in", i) for i in range(n))
    assert result.tracks[0].path.read_bytes() == expected
    assert result.tracks[0].counts.late > 0
    asm.discard()


def test_pcmu_holes_and_padding_are_mu_law_silence(tmp_path):
    records = [
        started("a", "inbound", codec=PCMU_8K),
        started("b", "outbound", codec=PCMU_8K),
        media("a", 0, codec=PCMU_8K),
        media("a", 2, codec=PCMU_8K),
        media("b", 0, track="outbound", codec=PCMU_8K),
    ]
    result, wav_bytes = assemble(records, tmp_path)
    frame = PCMU_8K.bytes_for_ms(FRAME_MS)
    raw = result.tracks[0].path  # deleted by discard; check the WAV instead
    assert not raw.exists()
    data = np.frombuffer(wav_bytes[-3 * frame * 2 :], "u1").reshape(-1, 2)
    assert data[:frame, 0].tobytes() == payload("a", 0, PCMU_8K)
    assert set(data[frame : 2 * frame, 0].tolist()) == {0xFF}, "the hole"
    assert data[2 * frame :, 0].tobytes() == payload("a", 2, PCMU_8K)
    assert set(data[frame:, 1].tolist()) == {0xFF}, "the shorter track's padding"
    assert result.tracks[0].counts.gap_ms == FRAME_MS


# -- the conflict policy, case by case ---------------------------------------------------


def test_overlapping_bytes_belong_to_the_chunk_that_starts_first(tmp_path):
    a = payload("x", 1)
    b = payload("y", 2)
    records = [started("s"), media("s", 2, 10, data=b), media("s", 1, 0, data=a)]
    result, _ = assemble(records, tmp_path)
    asm = RecordingAssembler(CALL, tmp_path / "again")
    for r in records:
        asm.add(r)
    raw = asm.finalize().tracks[0].path.read_bytes()
    half = L16_16K.bytes_for_ms(10)
    assert raw == a + b[half:]
    counts = result.tracks[0].counts
    assert (counts.overlaps, counts.overlap_ms, counts.chunks) == (1, 10, 2)


def test_a_repeated_chunk_number_keeps_the_earliest_then_lowest_version(tmp_path):
    lo, hi = sorted([payload("p", 1), payload("q", 1)])
    records = [
        started("s"),
        media("s", 1, 0, data=hi),
        media("s", 1, 0, data=lo),
        media("s", 1, 0, data=hi),  # an exact copy of a loser: not another conflict
        media("s", 2, 400),  # the same number at another time: the earlier one wins
        media("s", 2, 20),
    ]
    asm = RecordingAssembler(CALL, tmp_path / "spool")
    for r in records:
        asm.add(r)
    result = asm.finalize()
    raw = result.tracks[0].path.read_bytes()
    assert raw == lo + payload("s", 2)
    counts = result.tracks[0].counts
    assert (counts.duplicates, counts.conflicting_duplicates) == (3, 2)


def test_a_second_stream_of_the_same_track_fills_the_first_ones_holes(tmp_path):
    records = [
        started("s1", received_ns=T0_NS, connection="k1"),
        started("s2", received_ns=T0_NS, connection="k2", event_time="2024-05-01T12:00:00.000Z"),
        media("s1", 0),
        media("s1", 2),
        *(media("s2", i, data=payload("s2", i)) for i in range(3)),
    ]
    asm = RecordingAssembler(CALL, tmp_path / "spool")
    for r in records:
        asm.add(r)
    result = asm.finalize()
    raw = result.tracks[0].path.read_bytes()
    assert raw == payload("s1", 0) + payload("s2", 1) + payload("s1", 2)
    assert result.tracks[0].counts.gaps == 0
    assert result.tracks[0].counts.overlaps == 2


# -- completeness and custody ------------------------------------------------------------


def test_a_clean_call_is_complete_with_custody(tmp_path):
    result, _ = assemble(whole_call(5), tmp_path)
    assert (result.complete, result.reason) == (True, "")
    s = result.streams[0]
    assert (s.stream_id, s.tracks, s.chunks, s.published, s.ingest_pods) == (
        "s-in",
        ["inbound"],
        5,
        5,
        ["ingest-0"],
    )
    assert s.first_arrival == "2024-05-01T12:00:00.005000Z"
    assert s.last_arrival == "2024-05-01T12:00:00.085000Z"
    assert s.closes[0].reason == "stop"


@pytest.mark.parametrize(
    ("records", "timed_out", "reason"),
    [
        (
            [started("s"), media("s", 0), closed("s", 1, "disconnect", "socket closed")],
            False,
            "stream s disconnect: socket closed",
        ),
        ([started("s"), media("s", 0)], True, "stream s: not closed (idle timeout)"),
        ([media("s", 0), closed("s", 1)], False, "stream s: start record missing"),
        (
            [started("s"), media("s", 0), closed("s", 3)],
            False,
            "stream s: 2 of 3 published chunks not received",
        ),
        (
            [started("s"), media("s", 0), media("s", 4), closed("s", 2)],
            False,
            "stream s: gaps, 3 chunks missing",
        ),
        ([started("s"), closed("s", 0)], False, "no audio"),
    ],
)
def test_incomplete_recordings_say_why(tmp_path, records, timed_out, reason):
    result, _ = assemble(records, tmp_path, timed_out=timed_out)
    assert not result.complete
    assert reason in result.reason.split("; ")


def test_a_both_stream_with_one_counter_for_two_tracks_has_no_gaps(tmp_path):
    records: list[envelope.Record] = [started("s", "both")]
    for i in range(10):
        track = "inbound" if i % 2 == 0 else "outbound"
        records.append(media("s", i, (i // 2) * FRAME_MS, track=track))
    records.append(closed("s", 10))
    result, _ = assemble(records, tmp_path)
    assert result.streams[0].numbering == "shared"
    assert result.complete, result.reason
    assert [t.track for t in result.tracks] == ["inbound", "outbound"]


def test_a_declared_silent_track_still_gets_its_channel(tmp_path):
    result, wav_bytes = assemble([started("s", "both"), media("s", 0), closed("s", 1)], tmp_path)
    channels, samples = frames(wav_bytes, tmp_path)
    assert channels == 2 and not samples[:, 1].any()
    assert result.tracks[1].length == 0


def test_a_stream_in_another_codec_is_left_out_and_reported(tmp_path):
    records = [
        started("a", "inbound", received_ns=T0_NS),
        started("b", "outbound", codec=PCMU_8K, received_ns=T0_NS + 1),
        media("a", 0),
        media("b", 0, track="outbound", codec=PCMU_8K),
        closed("a", 1),
        closed("b", 1),
    ]
    result, _ = assemble(records, tmp_path)
    assert result.codec == L16_16K
    assert "stream b: codec PCMU/8000 differs from recording codec L16/16000" in result.reason
    assert result.tracks[1].length == 0 and result.tracks[1].counts.rejected == 1


def test_audio_past_the_maximum_duration_is_rejected(tmp_path):
    asm = RecordingAssembler(CALL, tmp_path / "spool", max_duration_ms=1000)
    asm.add(started("s"))
    asm.add(media("s", 0))
    asm.add(media("s", 1, 990))  # ends at 1010 ms
    result = asm.finalize()
    assert result.tracks[0].counts.rejected == 1
    assert "stream s: 1 chunks rejected" in result.reason


def test_records_of_another_call_or_after_finalize_are_refused(tmp_path):
    asm = RecordingAssembler("other", tmp_path / "spool")
    with pytest.raises(WrongCallError):
        asm.add(media("s", 0))
    asm = RecordingAssembler(CALL, tmp_path / "spool2")
    asm.add(media("s", 0))
    first = asm.finalize()
    assert asm.finalize() is first
    with pytest.raises(FinalizedError):
        asm.add(media("s", 1))


def test_event_time_parsing():
    assert event_time_ns("2024-05-01T12:00:00.040Z") == T0_NS + 40_000_000
    assert event_time_ns("2024-05-01T14:00:00.040+02:00") == T0_NS + 40_000_000
    assert event_time_ns("2024-05-01 12:00:00.040") == T0_NS + 40_000_000
    assert event_time_ns("yesterday") is None
    assert event_time_ns("2024-99-01T12:00:00.040Z") is None
    assert event_time_ns("2024-05-01T12:00:00Z") is None
    assert event_time_ns("2024-05-01T12:00:00.040123Z") == T0_NS + 40_123_000


def mark(stream: str, name: str, at_ms: int, *, event_time: str | None = None, seq: int = 0,
         delay_ms: int = 30) -> envelope.MarkReceived:
    """A mark read by an ingest pod ``at_ms`` (+ ``delay_ms`` of network) after T0_NS."""
    return envelope.MarkReceived(call_id=CALL, stream_id=stream, name=name, seq=seq,
                                 received_ns=T0_NS + (at_ms + delay_ms) * 1_000_000,
                                 event_time=event_time)


def test_marks_of_a_twoway_stream_are_placed_on_the_recording_timeline(tmp_path):
    """A bot's twoway stream starts 40 ms after callrec's both stream: its marks sit at
    the stream's offset plus their time since its start, on Wavix's clock (event_time);
    a mark without event_time falls back to the receive time; a replayed one is listed once."""
    records = [
        started("s-both", "both", event_time="2024-05-01T12:00:00.000Z", received_ns=T0_NS),
        started("s-bot", "inbound", stream_type="twoway",
                event_time="2024-05-01T12:00:00.040Z", received_ns=T0_NS + 47_000_000),
        *(media("s-both", i) for i in range(5)),
        mark("s-bot", "greeting", 1500, event_time="2024-05-01T12:00:01.540Z", seq=7),
        mark("s-bot", "greeting", 1500, event_time="2024-05-01T12:00:01.540Z", seq=7),
        mark("s-bot", "no-time", 2000, seq=9),
        closed("s-both", 5),
    ]
    result, _ = assemble(records, tmp_path)
    assert result.clock == "event_time"
    assert [(e.at_ms, e.name, e.seq, e.clock, e.stream_id) for e in result.timeline] == [
        (1540, "greeting", 7, "event_time", "s-bot"),  # 40 ms offset + 1500 ms since start
        (40 + 2030 - 47, "no-time", 9, "received", "s-bot"),  # since its receive start
    ]
    assert {s.stream_id: s.marks for s in result.streams} == {"s-both": 0, "s-bot": 3}
    permuted, _ = assemble(list(reversed(records)), tmp_path)
    assert permuted.timeline == result.timeline


def test_marks_on_receive_times_and_without_a_start(tmp_path):
    records = [
        started("s-bot", "inbound", stream_type="twoway", event_time=None, received_ns=T0_NS),
        media("s-bot", 0),
        mark("s-bot", "a", 700),
        mark("s-lost", "b", 900),  # its stream's start never arrived: nothing to place it by
    ]
    result, _ = assemble(records, tmp_path)
    assert result.clock == "received"
    assert [(e.at_ms, e.name, e.clock) for e in result.timeline] == [
        (730, "a", "received"), (None, "b", "received")]
