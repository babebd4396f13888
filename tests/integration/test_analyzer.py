"""``callrec analyzer`` end to end, with the real model, Kafka and MinIO:
simulate -> ingest -> Kafka -> recorder -> MinIO + callrec.recordings -> analyzer -> MinIO,
then ``callrec query`` over the bucket.

The calls: jfk.flac (word error rate), stereo_diarization.wav (each sentence on
its own channel), espeak-ng utterances placed at known offsets (talk, silence
and overtalk against the truth), a call of low-level white noise (no text), and
stereo_diarization.wav streamed with dropped, duplicated and reordered chunks
(the network figures of the metrics table). A recording whose WAV does not match
its manifest fails as ``bad_audio``.

Also: the consumer lag while a backlog is worked through (real Kafka), and
``callrec analyzer --backfill`` as a process against MinIO.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from aiokafka import AIOKafkaProducer

from callrec import simulator, wiring
from callrec.cli import main
from deploy.local import stack
from infra.audio import encode_pcm
from infra.parquet import read_parquet
from infra.store.s3 import S3Store
from schemas import envelope
from schemas.codecs import L16_24K
from schemas.manifest import recording_event
from tests.analyzerutil import (
    GatedTranscriber,
    archive_call,
    ms,
    noise,
    pcm,
    place,
    speak,
    word_error_rate,
)
from tests.integration.conftest import create_topics
from tests.integration.ingestutil import TOKEN, ingest_settings, running_ingest, stream_url
from tests.integration.recorderutil import (
    new_bucket,
    recorder_settings,
    running,
    running_recorder,
    s3_store,
)
from workers.analyzer.analysis import analyze_recording, load_manifest
from workers.analyzer.service import AnalyzerService
from workers.analyzer.settings import AnalyzerSettings
from workers.analyzer.transcribe import Transcriber, TranscriberConfig, WhisperTranscriber

JFK = ("And so my fellow Americans, ask not what your country can do for you, ask what you can "
       "do for your country.")
LEFT = ("He began a confused complaint against the wizard, who had vanished behind the curtain "
        "on the left.")
RIGHT = "The horizon seems extremely distant."
RATE = L16_24K.sample_rate
TOLERANCE_MS = 100


@pytest.fixture(scope="module")
def transcriber() -> Iterator[WhisperTranscriber]:
    """The bundled tiny.en, loaded once; the hub is never reached."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield WhisperTranscriber(TranscriberConfig(cpu_threads=2))
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def analyzer_settings(kafka: stack.KafkaServer, minio: stack.MinioServer, recordings_topic: str,
                      bucket: str, **overrides: Any) -> AnalyzerSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka.bootstrap,
        "kafka_recordings_topic": recordings_topic,
        "archive_uri": f"s3://{bucket}",
        "s3_endpoint_url": minio.endpoint,
        "s3_access_key_id": minio.access_key,
        "s3_secret_access_key": minio.secret_key,
        "analyzer_group_id": f"analyzer-{uuid.uuid4().hex[:8]}",
        "analyzer_cpu_threads": 2,
    }
    values.update(overrides)
    return AnalyzerSettings(**values)


@contextlib.asynccontextmanager
async def running_analyzer(settings: AnalyzerSettings, transcriber: Transcriber
                           ) -> AsyncIterator[AnalyzerService]:
    store = settings.open_store()
    await asyncio.to_thread(store.check)
    async with running(wiring.analyzer_service(settings, store, transcriber)) as service:
        yield service


async def wait_for_transcripts(store: S3Store, count: int, timeout: float = 180) -> list[str]:
    async with asyncio.timeout(timeout):
        while True:
            keys = [k for k in await asyncio.to_thread(store.list_keys, "recordings/")
                    if k.endswith("/transcript.json")]
            if len(keys) >= count:
                return keys
            await asyncio.sleep(0.3)


async def publish(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def metric(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def lag_samples() -> dict[str, float]:
    """callrec_analyzer_consumer_lag_records by partition."""
    return {
        s.labels["partition"]: s.value for m in prometheus_client.REGISTRY.collect()
        if m.name == "callrec_analyzer_consumer_lag_records" for s in m.samples
    }


NOISE_DBFS = -60.0
FAULTS = simulator.Faults(drop=0.03, duplicate=0.03, reorder=0.03, seed=11)


def espeak_call() -> tuple[simulator.SimulatedCall, dict[str, float]]:
    """Two parties, speech at known offsets with 0.5 s of overtalk, and the truth."""
    first = speak("the quarterly report is ready for review")
    second = speak("please send me the final numbers today")
    third = speak("thank you very much")
    length = 8000
    inbound = place(length, RATE, [(500, first), (5500, third)])
    outbound = place(length, RATE, [(2200, second)])
    spans = {"inbound": [(500, 500 + ms(first)), (5500, 5500 + ms(third))],
             "outbound": [(2200, 2200 + ms(second))]}
    overtalk = max(0.0, min(spans["inbound"][0][1], spans["outbound"][0][1]) - 2200)
    talk_in = sum(e - s for s, e in spans["inbound"])
    talk_out = sum(e - s for s, e in spans["outbound"])
    truth = {"inbound": talk_in, "outbound": talk_out, "overtalk": overtalk,
             "call": talk_in + talk_out - overtalk,
             "silence": length - (talk_in + talk_out - overtalk)}
    assert truth["overtalk"] > 300, "the utterances overlap"
    tracks = {"inbound": encode_pcm(inbound, L16_24K), "outbound": encode_pcm(outbound, L16_24K)}
    return simulator.SimulatedCall("espeak-1", tracks, "both"), truth


def table_rows(store: S3Store, table: str, rec_id: str) -> list[dict[str, Any]]:
    [key] = [k for k in store.list_keys(f"tables/{table}/") if k.endswith(f"/{rec_id}.parquet")]
    rows: list[dict[str, Any]] = read_parquet(store.get_bytes(key)).to_pylist()
    return rows


async def test_calls_through_the_whole_pipeline_are_transcribed_measured_and_queryable(
    kafka: stack.KafkaServer, minio: stack.MinioServer, media_topic: str, data_dir: Path,
    tmp_path: Path, transcriber: WhisperTranscriber, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = new_bucket(minio)
    store = s3_store(minio, bucket)
    recorder = recorder_settings(kafka, minio, media_topic, bucket, str(tmp_path / "spill"))
    await create_topics(kafka.bootstrap, recorder.kafka_recordings_topic, partitions=2)
    analyzer = analyzer_settings(kafka, minio, recorder.kafka_recordings_topic, bucket,
                                 analyzer_max_attempts=1)

    [jfk] = simulator.build_calls(data_dir / "jfk.flac", channel="inbound", call_id_prefix="jfk")
    [stereo] = simulator.build_calls(data_dir / "stereo_diarization.wav", call_id_prefix="stereo")
    talk, truth = espeak_call()
    # Low-level white noise, as a quiet line carries: not digital zeros, which any VAD passes.
    hiss = {t: pcm(noise(5000, RATE, NOISE_DBFS, seed)) for t, seed in (("inbound", 1),
                                                                        ("outbound", 2))}
    silence = simulator.SimulatedCall("silence-1", hiss, "both")
    [faulty] = simulator.build_calls(data_dir / "stereo_diarization.wav", call_id_prefix="faulty")
    calls = [jfk, stereo, talk, silence, faulty]
    rtf_count = "callrec_analyzer_transcription_rtf_count"
    before = {"analyzed": metric("callrec_analyzer_recordings_total", outcome="analyzed"),
              "failed": metric("callrec_analyzer_recordings_total", outcome="failed"),
              "rtf": metric(rtf_count)}
    failures_before = {r: metric("callrec_analyzer_failures_total", reason=r)
                       for r in ("bad_record", "not_found", "bad_audio")}
    # A recording archived by the recorder's code whose WAV was then damaged: bad_audio.
    broken = await asyncio.to_thread(archive_call, store, "broken-1",
                                     {"inbound": pcm(noise(1000, RATE, -20.0, 3))}, tmp_path)
    await asyncio.to_thread(store.put_bytes, "recordings/broken-1-0/audio.wav",
                            b"RIFF\x00\x00\x00\x00WAVEjunk", "audio/wav")
    # Poison ahead of the real events, in their partitions (same keys): skipped, not blocking.
    await publish(kafka.bootstrap, analyzer.kafka_recordings_topic, [
        (b"jfk-1", b"not an envelope"),
        (b"stereo-1", envelope.encode(envelope.RecordingFinished(
            call_id="ghost", part=0, recording_id="ghost-0", wav_uri="", manifest_uri="",
            tracks=["inbound"], codec="L16/24000", start_ns=0, duration_ms=0, complete=True,
            reason="", wav_sha256=""))),
        (b"broken-1", envelope.encode(broken)),
    ])

    reports = {}
    async with (running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as ingest,
                running_recorder(recorder), running_analyzer(analyzer, transcriber)):
        for call in calls:
            reports[call.call_id] = await simulator.stream_call(
                stream_url(ingest, None), call, realtime=False, token=TOKEN,
                faults=FAULTS if call is faulty else simulator.Faults())
            assert reports[call.call_id].completed
        keys = await wait_for_transcripts(store, len(calls))
        async with asyncio.timeout(60):  # the two that fail have no transcript
            while metric("callrec_analyzer_recordings_total", outcome="failed") < (
                    before["failed"] + 2):
                await asyncio.sleep(0.1)
    assert len(keys) == len(calls)
    assert not store.exists("recordings/broken-1-0/transcript.json")
    assert {
        "analyzed": metric("callrec_analyzer_recordings_total", outcome="analyzed"),
        "failed": metric("callrec_analyzer_recordings_total", outcome="failed"),
        "rtf": metric(rtf_count),
    } == {"analyzed": before["analyzed"] + 5, "failed": before["failed"] + 2,
          "rtf": before["rtf"] + 5}
    assert {r: metric("callrec_analyzer_failures_total", reason=r) - n
            for r, n in failures_before.items()} == {"bad_record": 1, "not_found": 1,
                                                     "bad_audio": 1}

    # jfk.flac: word error rate against the reference.
    jfk_segments = table_rows(store, "segments", "jfk-1-0")
    assert {s["track"] for s in jfk_segments} == {"inbound"}
    jfk_text = " ".join(s["text"] for s in sorted(jfk_segments, key=lambda s: s["start_ms"]))
    wer = word_error_rate(JFK, jfk_text)
    with capsys.disabled():
        print(f"\njfk WER {wer:.3f}: {jfk_text!r}")
    assert wer <= 0.15, jfk_text
    assert all(s["speaker"] == "caller" and 0 < s["confidence"] <= 1 for s in jfk_segments)

    # stereo_diarization.wav: the left sentence is inbound (caller), the right outbound (agent).
    stereo_rows = table_rows(store, "segments", "stereo-1-0")
    by_track = {t: " ".join(s["text"] for s in stereo_rows if s["track"] == t)
                for t in ("inbound", "outbound")}
    with capsys.disabled():
        print(f"stereo: {by_track}")
    assert word_error_rate(LEFT, by_track["inbound"]) <= 0.25, by_track
    assert word_error_rate(RIGHT, by_track["outbound"]) <= 0.25, by_track
    assert "wizard" in by_track["inbound"].lower() and "wizard" not in by_track["outbound"].lower()
    assert "horizon" in by_track["outbound"].lower()
    assert "horizon" not in by_track["inbound"].lower()
    assert {s["speaker"] for s in stereo_rows if s["track"] == "outbound"} == {"agent"}

    # espeak-ng speech at known offsets: talk, silence and overtalk against the truth.
    measured = {m["track"]: m for m in table_rows(store, "metrics", "espeak-1-0")}
    errors = {
        "inbound talk": measured["inbound"]["talk_ms"] - truth["inbound"],
        "outbound talk": measured["outbound"]["talk_ms"] - truth["outbound"],
        "call talk": measured["call"]["talk_ms"] - truth["call"],
        "silence": measured["call"]["silence_ms"] - truth["silence"],
        "overtalk": measured["call"]["overtalk_ms"] - truth["overtalk"],
    }
    with capsys.disabled():
        print(f"espeak truth {truth}; errors (ms) {errors}")
    assert all(abs(e) <= TOLERANCE_MS for e in errors.values()), errors
    assert measured["outbound"]["interruptions"] == 1 and measured["inbound"]["interruptions"] == 0
    espeak_segments = table_rows(store, "segments", "espeak-1-0")
    assert {s["track"] for s in espeak_segments} == {"inbound", "outbound"}

    # -60 dBFS white noise: no text at all, no talk, and the level is the noise's.
    assert table_rows(store, "segments", "silence-1-0") == []
    doc = json.loads(store.get_bytes("recordings/silence-1-0/transcript.json"))
    assert doc["segments"] == [] and all(t["text"] == "" for t in doc["tracks"])
    silent = {m["track"]: m for m in table_rows(store, "metrics", "silence-1-0")}
    assert silent["call"]["talk_ms"] == 0 and silent["call"]["silence_ms"] == 5000
    assert all(abs(silent[t]["rms_dbfs"] - NOISE_DBFS) < 0.5 for t in silent), silent

    # Dropped, duplicated and reordered chunks: the metrics table carries the recorder's
    # counts (manifest) per track, and the call row the calls row's sums.
    manifest = load_manifest(store, "recordings/faulty-1-0/manifest.json", "faulty-1-0")
    network = {m["track"]: (m["gaps"], m["duplicates"], m["out_of_order"])
               for m in table_rows(store, "metrics", "faulty-1-0")}
    [sent] = reports["faulty-1"].streams
    for t in ("inbound", "outbound"):
        counts = manifest.counts[t]
        assert network[t] == (counts.gaps, counts.duplicates, counts.out_of_order)
        assert network[t][1] == len(sent.sent_chunks[t]) - len(set(sent.sent_chunks[t]))
        # A hole is a run of dropped chunks with audio on both sides.
        dropped, received = set(sent.dropped[t]), set(sent.sent_chunks[t])
        holes = {c for c in dropped if c - 1 not in dropped and min(received) < c < max(received)}
        assert network[t][0] == len(holes), sorted(dropped)
        assert all(n > 0 for n in network[t]), network
    [calls_row] = table_rows(store, "calls", "faulty-1-0")
    assert network["call"] == (calls_row["gaps"], calls_row["duplicates"],
                               calls_row["out_of_order"])
    assert network["call"] == tuple(map(sum, zip(network["inbound"], network["outbound"],
                                                 strict=True)))
    with capsys.disabled():
        print(f"faulty-1 network figures {network}; dropped "
              f"{ {t: len(c) for t, c in sent.dropped.items()} }")

    # callrec query over the bucket.
    for name, value in (("ARCHIVE_URI", f"s3://{bucket}"), ("S3_ENDPOINT_URL", minio.endpoint),
                        ("S3_ACCESS_KEY_ID", minio.access_key),
                        ("S3_SECRET_ACCESS_KEY", minio.secret_key)):
        monkeypatch.setenv(f"CALLREC_{name}", value)

    def query(sql: str) -> list[dict[str, Any]]:
        capsys.readouterr()
        assert main(["query", "--format", "json", sql]) == 0
        result: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
        return result

    assert query("SELECT call_id FROM calls ORDER BY call_id") == [
        {"call_id": c} for c in ("broken-1", "espeak-1", "faulty-1", "jfk-1", "silence-1",
                                 "stereo-1")
    ]
    assert query("SELECT call_id, count(*) AS n FROM segments GROUP BY call_id "
                 "HAVING call_id = 'silence-1'") == []
    assert query("SELECT DISTINCT call_id, speaker FROM segments WHERE text ILIKE '%country%'"
                 ) == [{"call_id": "jfk-1", "speaker": "caller"}]
    assert query("SELECT track, talk_ms, overtalk_ms FROM metrics WHERE call_id = 'espeak-1' "
                 "ORDER BY track") == [
        {"track": t, "talk_ms": measured[t]["talk_ms"], "overtalk_ms": measured[t]["overtalk_ms"]}
        for t in ("call", "inbound", "outbound")
    ]
    [row] = query("SELECT recording_uri FROM calls WHERE call_id = 'jfk-1'")
    assert row["recording_uri"] == f"s3://{bucket}/recordings/jfk-1-0/audio.wav"
    counts_before = query("SELECT (SELECT count(*) FROM segments) AS s, "
                          "(SELECT count(*) FROM metrics) AS m")

    # Idempotent: analysing again writes the same bytes at the same keys, adds no row.
    before = {k: store.get_bytes(k) for k in store.list_keys("")}
    for rec_id in ("jfk-1-0", "stereo-1-0", "espeak-1-0", "silence-1-0", "faulty-1-0"):
        manifest = load_manifest(store, f"recordings/{rec_id}/manifest.json", rec_id)
        result = await asyncio.to_thread(
            analyze_recording, store, recording_event(manifest, store.uri), transcriber,
            analyzer.analysis_config(), force=True)
        assert not result.skipped
    after = {k: store.get_bytes(k) for k in store.list_keys("")}
    assert after == before
    assert query("SELECT (SELECT count(*) FROM segments) AS s, "
                 "(SELECT count(*) FROM metrics) AS m") == counts_before

    # A replay of callrec.recordings (a new group from the earliest offset) skips them all.
    modified = {o["Key"]: o["LastModified"]
                for o in store.client.list_objects_v2(Bucket=bucket)["Contents"]}
    skipped = metric("callrec_analyzer_recordings_total", outcome="skipped")
    replay = analyzer.model_copy(update={"analyzer_group_id": "replay-" + uuid.uuid4().hex[:6]})
    async with running_analyzer(replay, transcriber):
        async with asyncio.timeout(60):
            while metric("callrec_analyzer_recordings_total", outcome="skipped") < skipped + 5:
                await asyncio.sleep(0.1)
    assert {o["Key"]: o["LastModified"]
            for o in store.client.list_objects_v2(Bucket=bucket)["Contents"]} == modified


async def test_the_lag_counts_a_backlog_while_it_is_worked_through_and_returns_to_zero(
    kafka: stack.KafkaServer, minio: stack.MinioServer, tmp_path: Path,
) -> None:
    """Events published faster than the analyzer works (each analysis waits for the test to
    let it go): the lag is every event not yet analysed, those that arrive while the
    partitions are paused included (the broker's log end, not the last fetch's), in both
    partitions; it returns to 0 when all are done."""
    bucket = new_bucket(minio)
    store = s3_store(minio, bucket)
    topic = f"callrec.recordings.test-{uuid.uuid4().hex[:10]}"
    await create_topics(kafka.bootstrap, topic, partitions=2)
    gated = GatedTranscriber()
    settings = analyzer_settings(kafka, minio, topic, bucket)
    events = [
        await asyncio.to_thread(archive_call, store, f"backlog-{i}",
                                {"inbound": pcm(noise(500, RATE, -20.0, i))}, tmp_path)
        for i in range(8)
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        async with running_analyzer(settings, gated) as service:
            for i, event in enumerate(events[:6]):
                await producer.send_and_wait(topic, envelope.encode(event),
                                             key=event.call_id.encode(), partition=i % 2)
            # One is being analysed, five wait (fetched or not): none is done.
            async with asyncio.timeout(30):
                while lag_samples() != {"0": 3, "1": 3}:
                    await asyncio.sleep(0.1)
            # Published while the partitions are paused: no fetch sees them, the broker does.
            for event in events[6:]:
                await producer.send_and_wait(topic, envelope.encode(event),
                                             key=event.call_id.encode(), partition=0)
            async with asyncio.timeout(30):
                while lag_samples() != {"0": 5, "1": 3}:
                    await asyncio.sleep(0.1)
            assert service.analyzed == 0
            gated.gate.set()
            async with asyncio.timeout(60):
                while service.analyzed < 8 or lag_samples() != {"0": 0, "1": 0}:
                    await asyncio.sleep(0.1)
        assert lag_samples() == {}, "a stopped analyzer leaves no partition behind"
    finally:
        gated.gate.set()
        await producer.stop()
    assert len(await wait_for_transcripts(store, 8, timeout=10)) == 8


def test_backfill_as_a_process_against_minio(
    minio: stack.MinioServer, data_dir: Path, tmp_path: Path,
) -> None:
    """``callrec analyzer --backfill`` analyses what the archive lacks, exits 0; run again,
    it skips what is done, and exits 1 listing a recording it cannot analyse."""
    bucket = new_bucket(minio)
    store = s3_store(minio, bucket)
    [jfk] = simulator.build_calls(data_dir / "jfk.flac", channel="inbound", call_id_prefix="jfk")
    [stereo] = simulator.build_calls(data_dir / "stereo_diarization.wav", call_id_prefix="st")
    for call in (jfk, stereo):
        archive_call(store, call.call_id, call.tracks, tmp_path)
    exe = Path(sys.executable).with_name("callrec")
    assert exe.is_file(), f"{exe}: the callrec console script of this environment"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CALLREC_ARCHIVE_URI": f"s3://{bucket}",
           "CALLREC_S3_ENDPOINT_URL": minio.endpoint,
           "CALLREC_S3_ACCESS_KEY_ID": minio.access_key,
           "CALLREC_S3_SECRET_ACCESS_KEY": minio.secret_key, "CALLREC_ANALYZER_CPU_THREADS": "2"}

    def backfill() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), "analyzer", "--backfill", "--no-progress"], env=env,
                              capture_output=True, text=True, timeout=300, check=False)

    first = backfill()
    assert first.returncode == 0, first.stderr
    assert "backfill: 2 recordings, 2 analysed, 0 already done, 0 failed" in first.stderr
    jfk_text = " ".join(s["text"] for s in sorted(table_rows(store, "segments", "jfk-1-0"),
                                                  key=lambda s: s["start_ms"]))
    assert word_error_rate(JFK, jfk_text) <= 0.15, jfk_text
    assert {m["track"] for m in table_rows(store, "metrics", "st-1-0")} == {
        "inbound", "outbound", "call"}
    for rec_id in ("jfk-1-0", "st-1-0"):
        doc = json.loads(store.get_bytes(f"recordings/{rec_id}/transcript.json"))
        assert doc["recording_id"] == rec_id and doc["segments"]
    done = {o["Key"]: o["LastModified"]
            for o in store.client.list_objects_v2(Bucket=bucket)["Contents"]}

    archive_call(store, "bad", {"inbound": pcm(noise(1000, RATE, -20.0, 4))}, tmp_path)
    store.put_bytes("recordings/bad-0/audio.wav", b"not a wav", "audio/wav")
    second = backfill()
    assert second.returncode == 1, second.stderr
    assert "backfill: 3 recordings, 0 analysed, 2 already done, 1 failed" in second.stderr
    assert "failed: bad-0 (bad_audio)" in second.stderr
    after = {o["Key"]: o["LastModified"]
             for o in store.client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {k: after[k] for k in done} == done, "what was done is not written again"
