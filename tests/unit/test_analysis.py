"""analyze_recording and backfill on a local archive, with a fake transcriber (no model)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import numpy as np
import pytest

from infra.audio import encode_pcm
from infra.parquet import read_parquet
from infra.store import StoredObject
from infra.store.local import LocalStore
from schemas.codecs import PCMU_8K
from tests.analyzerutil import START_NS, FakeTranscriber, archive_call, pcm
from tests.unit.test_callmetrics import track
from workers.analyzer.analysis import AnalysisConfig, analyze_recording, snap_to_talk
from workers.analyzer.backfill import archived_recordings, backfill
from workers.analyzer.errors import AudioFormatError, RecordingNotFoundError
from workers.analyzer.transcribe import Segment, Word, split_at_pauses

RATE = 24000
CONFIG = AnalysisConfig()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "archive")
    store.check()
    return store


def two_party(store: LocalStore, tmp_path: Path, call_id: str = "call-a", **kw: int):  # type: ignore[no-untyped-def]
    inbound = track(6000, (500, 2500), rate=RATE)
    outbound = track(6000, (2000, 4000), rate=RATE)
    return archive_call(store, call_id, {"inbound": pcm(inbound), "outbound": pcm(outbound)},
                        tmp_path, **kw)


def objects(store: LocalStore) -> dict[str, bytes]:
    return {k: store.get_bytes(k) for k in store.list_keys("")}


def test_rows_transcript_and_metrics_of_a_two_party_call(store: LocalStore,
                                                         tmp_path: Path) -> None:
    event = two_party(store, tmp_path)
    result = analyze_recording(store, event, FakeTranscriber(), CONFIG)
    assert not result.skipped and result.audio_seconds == 12.0
    assert result.keys == (
        "tables/segments/date=2025-11-24/call-a-0.parquet",
        "tables/metrics/date=2025-11-24/call-a-0.parquet",
        "tables/turns/date=2025-11-24/call-a-0.parquet",
        "tables/turn_metrics/date=2025-11-24/call-a-0.parquet",
        "recordings/call-a-0/transcript.json",
    )
    segments = read_parquet(store.get_bytes(result.keys[0])).to_pylist()
    got = [(s["track"], s["speaker"], s["start_ms"], s["end_ms"], s["text"]) for s in segments]
    assert got == [
        ("inbound", "caller", 500, 2500, "hello there"),
        ("outbound", "agent", 2000, 4000, "hello there"),
    ]
    metrics = {m["track"]: m for m in read_parquet(store.get_bytes(result.keys[1])).to_pylist()}
    assert set(metrics) == {"inbound", "outbound", "call"}
    assert (metrics["inbound"]["talk_ms"], metrics["inbound"]["silence_ms"]) == (2000, 4000)
    assert metrics["outbound"]["interruptions"] == 1
    call = metrics["call"]
    assert (call["talk_ms"], call["silence_ms"], call["overtalk_ms"]) == (3500, 2500, 500)
    assert metrics["inbound"]["words_per_minute"] == 60.0  # 2 words in 2 s
    assert call["rms_dbfs"] is not None and call["clipping_ratio"] == 0.0
    # The recorder's per-track jitter (manifest counts); the call row takes the worst.
    assert call["jitter_ms"] == max(metrics[t]["jitter_ms"] for t in ("inbound", "outbound"))
    # The agent starts at 2000 while the caller talks to 2500: a barge-in, 500 ms of yield.
    turns = read_parquet(store.get_bytes(result.keys[2])).to_pylist()
    assert [(t["turn"], t["speaker"], t["start_ms"], t["end_ms"], t["barge_in"], t["yield_ms"],
             t["response_latency_ms"], t["text"]) for t in turns] == [
        (0, "caller", 500, 2500, False, None, None, "hello there"),
        (1, "agent", 2000, 4000, True, 500, -500, "hello there"),
    ]
    figures = {m["track"]: m for m in read_parquet(store.get_bytes(result.keys[3])).to_pylist()}
    assert (figures["outbound"]["barge_ins"], figures["inbound"]["barged_into"],
            figures["inbound"]["yield_p50_ms"], figures["call"]["dead_air_count"]) == (1, 1, 500, 0)
    doc = msgspec.json.decode(store.get_bytes(result.keys[4]))
    assert doc["analysis"]["transcriber"] == {"model": "fake", "text": "hello there"}
    assert [s["track"] for s in doc["segments"]] == ["inbound", "outbound"]
    assert doc["tracks"][0]["talk"] == [[500, 2500]]
    assert doc["analysis"]["turns"] == {"merge_gap_ms": 600, "min_turn_ms": 200,
                                        "dead_air_ms": 2000}
    assert doc["wav_sha256"] == event.wav_sha256


def test_analysing_twice_writes_the_same_bytes_and_a_replay_is_skipped(
    store: LocalStore, tmp_path: Path
) -> None:
    event = two_party(store, tmp_path)
    fake = FakeTranscriber()
    analyze_recording(store, event, fake, CONFIG)
    first = objects(store)
    assert analyze_recording(store, event, fake, CONFIG, force=True).keys
    assert objects(store) == first
    assert analyze_recording(store, event, fake, CONFIG).skipped
    assert fake.calls == 4, "two tracks, twice; the replay did not transcribe"
    changed = FakeTranscriber("another model")
    assert not analyze_recording(store, event, changed, CONFIG).skipped


def test_a_tampered_wav_or_a_missing_recording_is_refused(store: LocalStore,
                                                          tmp_path: Path) -> None:
    event = two_party(store, tmp_path)
    wav = bytearray(store.get_bytes("recordings/call-a-0/audio.wav"))
    wav[-1] ^= 1
    store.put_bytes("recordings/call-a-0/audio.wav", bytes(wav), "audio/wav")
    with pytest.raises(AudioFormatError, match="sha256"):
        analyze_recording(store, event, FakeTranscriber(), CONFIG)
    missing = msgspec.structs.replace(event, recording_id="nope-0")
    with pytest.raises(RecordingNotFoundError):
        analyze_recording(store, missing, FakeTranscriber(), CONFIG)


def test_g711_mono_recording(store: LocalStore, tmp_path: Path) -> None:
    loud = np.full(8000, 32767, dtype=np.int16)  # 1 s clipped
    audio = np.concatenate([np.zeros(8000, np.int16), loud])
    event = archive_call(store, "mulaw", {"inbound": encode_pcm(audio, PCMU_8K)}, tmp_path,
                         codec=PCMU_8K)
    result = analyze_recording(store, event, FakeTranscriber(), CONFIG)
    rows = {m["track"]: m for m in read_parquet(store.get_bytes(result.keys[1])).to_pylist()}
    assert set(rows) == {"inbound", "call"}
    assert rows["inbound"]["talk_ms"] == 1000 and rows["inbound"]["clipping_ratio"] == 0.5
    assert rows["call"]["overtalk_ms"] == 0


def test_speaker_labels_are_configurable(store: LocalStore, tmp_path: Path) -> None:
    event = two_party(store, tmp_path)
    config = AnalysisConfig(speaker_labels={"inbound": "customer"})
    result = analyze_recording(store, event, FakeTranscriber(), config)
    rows = read_parquet(store.get_bytes(result.keys[0])).to_pylist()
    assert [r["speaker"] for r in rows] == ["customer", "outbound"]


def test_segments_split_at_pauses_and_snap_to_talk() -> None:
    words = (Word(100, 400, " Hello", 0.9), Word(400, 800, " there.", 0.9),
             Word(2000, 2300, " Bye", 0.8))
    first, second = split_at_pauses(words, 0.5, 1000)
    assert (first.start_ms, first.end_ms, first.text) == (100, 800, "Hello there.")
    assert [w.text for w in first.words] == ["Hello", "there."]
    assert (second.start_ms, second.text) == (2000, "Bye")
    segment = Segment(0, 3000, "x", None)
    assert snap_to_talk(segment, [(500, 1000), (1500, 2800)]) == Segment(500, 2800, "x", None)
    assert snap_to_talk(segment, [(4000, 5000)]) == segment


def test_backfill_resumes_and_filters_by_date(store: LocalStore, tmp_path: Path) -> None:
    day = 86_400 * 10**9
    for i in range(3):
        two_party(store, tmp_path, f"bf-{i}", start_ns=START_NS + i * day)
    analyze_recording(store, archive_event(store, "bf-0-0"), FakeTranscriber(), CONFIG)
    assert archived_recordings(store, dt.date(2025, 11, 25)) == ["bf-1-0", "bf-2-0"]
    fake = FakeTranscriber()
    report = backfill(store, fake, CONFIG, progress=False)
    assert (report.selected, report.analyzed, report.skipped, report.failed) == (3, 2, 1, {})
    again = backfill(store, fake, CONFIG, progress=False)
    assert (again.analyzed, again.skipped) == (0, 3)
    forced = backfill(store, fake, CONFIG, since=dt.date(2025, 11, 26), force=True,
                      progress=False)
    assert (forced.selected, forced.analyzed) == (1, 1)
    store.put_bytes("recordings/bf-2-0/audio.wav", b"RIFF", "audio/wav")
    broken = backfill(store, FakeTranscriber("new model"), CONFIG, progress=False)
    assert broken.analyzed == 2 and broken.failed == {"bf-2-0": "bad_audio"}


def archive_event(store: LocalStore, rec_id: str):  # type: ignore[no-untyped-def]
    from schemas.manifest import recording_event
    from workers.analyzer.analysis import load_manifest

    return recording_event(
        load_manifest(store, f"recordings/{rec_id}/manifest.json", rec_id), store.uri
    )


async def test_the_service_on_the_local_bus_commits_after_writing_and_skips_poison(
    store: LocalStore, tmp_path: Path
) -> None:
    """AnalyzerService is bus-agnostic: the local bus of ``callrec up`` drives it too."""
    import asyncio

    from infra.bus.local import LocalBus, LocalConsumer, LocalProducer
    from schemas import envelope
    from workers.analyzer.service import AnalyzerService

    bus = LocalBus(tmp_path / "bus")
    producer = LocalProducer(bus)
    await producer.start()
    good = two_party(store, tmp_path)
    ghost = msgspec.structs.replace(good, recording_id="ghost-0")
    for value in (b"garbage", envelope.encode(ghost), envelope.encode(good)):
        await producer.send_and_wait("recordings", value, key=b"k")
    service = AnalyzerService(consumer=LocalConsumer(bus, "analyzer"), store=store,
                              transcriber=FakeTranscriber(), config=CONFIG,
                              recordings_topic="recordings", max_attempts=1)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    async with asyncio.timeout(20):
        while service.analyzed < 1:
            await asyncio.sleep(0.02)
    stop.set()
    await task
    assert store.exists("recordings/call-a-0/transcript.json")
    assert bus.log("recordings").committed("analyzer") == 3, "past the poison and the call"
    bus.close()


def lag_samples() -> dict[str, float]:
    """callrec_analyzer_consumer_lag_records by partition label."""
    import prometheus_client

    return {
        s.labels["partition"]: s.value for m in prometheus_client.REGISTRY.collect()
        if m.name == "callrec_analyzer_consumer_lag_records" for s in m.samples
    }


async def test_the_lag_counts_the_backlog_being_worked_through_and_goes_with_the_partition(
    store: LocalStore, tmp_path: Path
) -> None:
    import asyncio

    from aiokafka import TopicPartition

    from infra.bus.local import LocalBus, LocalConsumer, LocalProducer
    from schemas import envelope
    from tests.analyzerutil import GatedTranscriber
    from workers.analyzer.service import AnalyzerService

    bus = LocalBus(tmp_path / "bus")
    producer = LocalProducer(bus)
    gated = GatedTranscriber()
    service = AnalyzerService(consumer=LocalConsumer(bus, "analyzer"), store=store,
                              transcriber=gated, config=CONFIG, recordings_topic="recordings",
                              poll_interval_s=0.05, lag_interval_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        for i in range(3):
            event = two_party(store, tmp_path, f"lag-{i}")
            await producer.send_and_wait("recordings", envelope.encode(event), key=b"k")
        # The first is being analysed, the other two wait: none is done, all three count.
        async with asyncio.timeout(20):
            while lag_samples() != {"0": 3}:
                await asyncio.sleep(0.02)
        gated.gate.set()
        async with asyncio.timeout(20):
            while service.analyzed < 3 or lag_samples() != {"0": 0}:
                await asyncio.sleep(0.02)
        # Revoked: the label goes (the new owner reports it) and is not set again.
        service.on_revoked({TopicPartition("recordings", 0)})
        assert lag_samples() == {}
        await service.report_lag()
        assert lag_samples() == {}
    finally:
        gated.gate.set()
        stop.set()
        await task
    # A process that stops leaves no label behind either.
    again = AnalyzerService(consumer=LocalConsumer(bus, "analyzer"), store=store,
                            transcriber=gated, config=CONFIG, recordings_topic="recordings",
                            lag_interval_s=0.05)
    await producer.send_and_wait("recordings", envelope.encode(two_party(store, tmp_path, "l3")),
                                 key=b"k")
    stop = asyncio.Event()
    task = asyncio.create_task(again.run(stop))
    try:
        async with asyncio.timeout(20):
            while again.analyzed < 1 or lag_samples() != {"0": 0}:
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
        bus.close()
    assert lag_samples() == {}


class InterruptedStore(LocalStore):
    """A LocalStore whose write of ``key`` is interrupted, as Ctrl-C or a kill would."""

    def __init__(self, root: Path, key: str) -> None:
        super().__init__(root)
        self.key = key

    def put_bytes(self, key: str, data: bytes, content_type: str) -> StoredObject:
        if key == self.key:
            raise KeyboardInterrupt
        return super().put_bytes(key, data, content_type)


def test_an_interrupted_backfill_started_again_does_only_the_rest_and_adds_no_row(
    store: LocalStore, tmp_path: Path
) -> None:
    from callrec import query

    for i in range(5):
        two_party(store, tmp_path, f"rs-{i}")
    # Stopped in the middle of the third recording: its rows are written, not its transcript.
    interrupted = InterruptedStore(store.root, "recordings/rs-2-0/transcript.json")
    first = FakeTranscriber()
    with pytest.raises(KeyboardInterrupt):
        backfill(interrupted, first, CONFIG, progress=False)
    assert first.calls == 6, "three recordings of two tracks reached the model"
    assert store.exists("tables/metrics/date=2025-11-24/rs-2-0.parquet")
    assert not store.exists("recordings/rs-2-0/transcript.json")
    done = {k: store.get_bytes(k) for k in store.list_keys("") if "/rs-0-0" in k or "/rs-1-0" in k}

    again = FakeTranscriber()
    report = backfill(store, again, CONFIG, progress=False)
    assert (report.selected, report.analyzed, report.skipped, report.failed) == (5, 3, 2, {})
    assert again.calls == 6, "only rs-2, rs-3 and rs-4 were transcribed"
    assert {k: store.get_bytes(k) for k in done} == done
    con = query.connect(str(store.root))
    try:
        assert query.run(con, "SELECT recording_id, track, count(*) FROM metrics "
                              "GROUP BY ALL HAVING count(*) > 1")[1] == []
        assert query.run(con, "SELECT count(*), count(DISTINCT recording_id) FROM metrics"
                         )[1] == [(15, 5)]
        assert query.run(con, "SELECT count(*) FROM segments")[1] == [(10,)]
    finally:
        con.close()
    assert all(store.exists(f"recordings/rs-{i}-0/transcript.json") for i in range(5))


def test_the_fingerprint_changes_with_what_changes_the_transcript_not_with_the_machine(
    store: LocalStore, tmp_path: Path
) -> None:
    """Loads the bundled tiny.en (a directory: no hub)."""
    import ctranslate2
    import faster_whisper

    from workers.analyzer.errors import ModelLoadError
    from workers.analyzer.transcribe import (
        TranscriberConfig,
        WhisperTranscriber,
        bundled_model_path,
        model_identity,
        resolve_model,
    )

    base = WhisperTranscriber(TranscriberConfig(cpu_threads=1))
    fp = base.fingerprint
    assert fp["model"] == model_identity(bundled_model_path(), "tiny.en")
    assert (fp["device"], fp["compute_type"], fp["batch_size"]) == ("cpu", "int8_float32", 8)
    assert (fp["faster_whisper"], fp["ctranslate2"]) == (faster_whisper.__version__,
                                                         ctranslate2.__version__)
    threads = WhisperTranscriber(TranscriberConfig(cpu_threads=2))
    batches = WhisperTranscriber(TranscriberConfig(cpu_threads=1, batch_size=4))
    assert threads.fingerprint == fp
    assert {k for k in fp if batches.fingerprint[k] != fp[k]} == {"batch_size"}

    event = two_party(store, tmp_path)
    assert not analyze_recording(store, event, base, CONFIG).skipped
    assert analyze_recording(store, event, threads, CONFIG).skipped, "another machine"
    assert not analyze_recording(store, event, batches, CONFIG).skipped, "another batch size"

    # A model is known by its weights: the same name with other weights is another model.
    for name, weights in (("a", b"weights 1"), ("b", b"weights 2")):
        (tmp_path / name / "small.en").mkdir(parents=True)
        (tmp_path / name / "small.en" / "model.bin").write_bytes(weights)
    first, second = (model_identity(*resolve_model(str(tmp_path / n / "small.en")))
                     for n in ("a", "b"))
    assert first.startswith("small.en@") and second.startswith("small.en@") and first != second
    with pytest.raises(ModelLoadError, match="no-such-model"):
        resolve_model("no-such-model")


def test_nothing_inside_a_pause_is_transcribed() -> None:
    from workers.analyzer.analysis import outside_pauses
    from workers.analyzer.transcribe import Segment, Word

    words = (Word(0, 400, "my", 0.9), Word(400, 900, "card", 0.9),
             Word(1200, 1600, "4111", 0.9), Word(2600, 3000, "thanks", 0.9))
    straddling = Segment(0, 3000, "my card 4111 thanks", 0.9, words)
    inside = Segment(1100, 1900, "1111 2222", 0.8)
    touching_no_words = Segment(1800, 2200, "expiry", 0.8)
    after = Segment(3500, 4000, "bye", 0.9)
    kept = outside_pauses([straddling, inside, touching_no_words, after], [(1000, 2500)])
    assert [(s.start_ms, s.end_ms, s.text) for s in kept] == [
        (0, 3000, "my card thanks"), (3500, 4000, "bye")]
    assert outside_pauses([after], []) == [after]
