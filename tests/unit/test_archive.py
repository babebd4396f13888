"""The archive step: parts, replays, and a stream that continues after its part ended."""

from __future__ import annotations

from pathlib import Path

from infra.peaks import decode_peaks, wav_peaks
from infra.store.local import LocalStore
from schemas import envelope
from schemas.codecs import L16_24K
from workers.recorder.archive import archive_recording
from workers.recorder.reassembly import RecordingAssembler
from workers.recorder.tracker import Recording

MS = 1_000_000
T0 = 1_763_712_000_000 * MS


def recording(tmp: Path, name: str, chunks: range, *, start: bool, close: bool) -> Recording:
    asm = RecordingAssembler("c1", tmp / name)
    if start:
        asm.add_start(envelope.StreamStarted(
            call_id="c1", stream_id="s1", stream_type="oneway", channel="inbound",
            codec="L16/24000", ingest_pod="p", connection_id="k", received_ns=T0))
    for n in chunks:
        asm.add_chunk(envelope.MediaChunk(
            call_id="c1", stream_id="s1", track="inbound", chunk=n, timestamp_ms=(n - 1) * 20,
            codec="L16/24000", payload=bytes([n % 256]) * 960, received_ns=T0 + n * 20 * MS))
    if close:
        asm.add_close(envelope.StreamClosed(
            call_id="c1", stream_id="s1", reason="stop", detail="", ingest_pod="p",
            connection_id="k", received_ns=T0 + (chunks[-1] + 1) * 20 * MS, chunks=100,
            invalid=0))
    rec = Recording("c1", 0, 0, asm)
    rec.idle = not close
    return rec


def test_a_replay_is_recognised_and_a_continuation_becomes_a_new_part(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "archive")
    first = archive_recording(store, recording(tmp_path, "a", range(1, 51), start=True,
                                               close=False), tmp_path)
    assert (first.event.part, first.already_archived, first.event.complete) == (0, False, False)
    before = {k: store.get_bytes(k) for k in store.list_keys("")}

    # The same records again (a replay after a crash): nothing is written.
    again = archive_recording(store, recording(tmp_path, "b", range(1, 51), start=True,
                                               close=False), tmp_path)
    assert (again.event.part, again.already_archived) == (0, True)
    assert {k: store.get_bytes(k) for k in store.list_keys("")} == before

    # A replay that starts inside the archived call (the committed offset lay in it):
    # its records are the call's tail, already archived; nothing is written.
    tail = archive_recording(store, recording(tmp_path, "t", range(30, 51), start=False,
                                              close=False), tmp_path)
    assert (tail.event.part, tail.already_archived) == (0, True)
    assert {k: store.get_bytes(k) for k in store.list_keys("")} == before

    # The stream went quiet past the idle timeout, then went on: its rest is part 1.
    rest = archive_recording(store, recording(tmp_path, "c", range(51, 101), start=False,
                                              close=True), tmp_path)
    assert (rest.event.part, rest.already_archived) == (1, False)
    assert store.exists("recordings/c1-1/audio.wav")
    assert {k: store.get_bytes(k) for k in before} == before, "part 0 untouched"


def test_the_archived_peaks_are_those_of_the_archived_wav(tmp_path: Path) -> None:
    """The recorder computes the peaks from the WAV's bytes as it writes them: they must
    be what reading the stored WAV back gives (the console's way for old recordings)."""
    store = LocalStore(tmp_path / "archive")
    archived = archive_recording(store, recording(tmp_path, "a", range(1, 301), start=True,
                                                  close=True), tmp_path)
    prefix = f"recordings/{archived.event.recording_id}/"
    wav = store.get_bytes(prefix + "audio.wav")
    stored = decode_peaks(store.get_bytes(prefix + "peaks.json"))
    read_back = wav_peaks((wav[i : i + 4096] for i in range(0, len(wav), 4096)), L16_24K,
                          ["inbound"])
    assert stored == read_back
    assert stored.duration_ms == 6000 and len(stored.channels[0].max) == 600
    assert set(stored.channels[0].max) != {0}, "the chunks' audio shows in the lane"
