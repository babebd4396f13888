"""Turn-taking end to end, with the real model, Kafka and MinIO:
simulate -> ingest -> Kafka -> recorder -> MinIO + callrec.recordings -> analyzer -> MinIO,
then the ``turns`` and ``turn_metrics`` tables and the docs/analytics.md examples through
``callrec query``.

The calls: a scripted support call with a bot (tests/turnscript.py: pauses of 200 ms to
3 s, two barge-ins the bot yields to in 350 ms and 1.2 s, an overlap it talks through, a
turn with a pause inside, 3 s of dead air) under -60 dBFS white noise on both channels;
and a bot greeting a line that carries only -60 dBFS noise. Also: the marks of a bot's
twoway stream land on the manifest's timeline.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from callrec import simulator
from callrec.cli import main
from deploy.local import stack
from infra.audio import encode_pcm
from schemas.codecs import L16_24K
from schemas.custody import iso_time, parse_iso_ns
from tests.analyzerutil import noise, normalize_words, pcm, place, speak
from tests.integration import wavixclient as wx
from tests.integration.conftest import create_topics
from tests.integration.ingestutil import TOKEN, ingest_settings, running_ingest, stream_url
from tests.integration.recorderutil import (
    load_manifest,
    new_bucket,
    recorder_settings,
    running_recorder,
    s3_store,
    wait_for_manifests,
)
from tests.integration.test_analyzer import (
    analyzer_settings,
    running_analyzer,
    table_rows,
    transcriber,  # noqa: F401  (the module's model fixture, loaded once)
    wait_for_transcripts,
)
from tests.turnscript import AGENT, CALLER, RATE, SUPPORT_CALL, dead_air, render
from workers.analyzer.transcribe import WhisperTranscriber
from workers.analyzer.turns import nearest_rank

TOLERANCE_MS = 30
NOISE_DBFS = -60.0
DOCS = Path(__file__).parents[2] / "docs" / "analytics.md"


def doc_example(intro: str) -> str:
    """The SQL of the docs/analytics.md example whose introduction starts with ``intro``."""
    match = re.search(re.escape(intro) + r"[^`]*```sql\n(.*?)```", DOCS.read_text(), re.S)
    assert match, f"no example after {intro!r} in {DOCS}"
    return match.group(1)


async def test_turns_latency_barge_in_and_dead_air_of_a_scripted_call(
    kafka: stack.KafkaServer,
    minio: stack.MinioServer,
    media_topic: str,
    tmp_path: Path,
    transcriber: WhisperTranscriber,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = new_bucket(minio)
    store = s3_store(minio, bucket)
    recorder = recorder_settings(kafka, minio, media_topic, bucket, str(tmp_path / "spill"))
    await create_topics(kafka.bootstrap, recorder.kafka_recordings_topic, partitions=2)
    analyzer = analyzer_settings(
        kafka, minio, recorder.kafka_recordings_topic, bucket, analyzer_dead_air_ms=2000
    )

    tracks, truth = render(SUPPORT_CALL, noise_dbfs=NOISE_DBFS)
    support = simulator.SimulatedCall(
        "support-1", {t: encode_pcm(tracks[t], L16_24K) for t in (CALLER, AGENT)}, "both"
    )
    greeting = speak("hello, this is the automated assistant, how can I help")
    length = 5000
    bot = place(length, RATE, [(800, greeting)]) + noise(length, RATE, NOISE_DBFS, 5)
    hiss = simulator.SimulatedCall(
        "hiss-1", {CALLER: pcm(noise(length, RATE, NOISE_DBFS, 4)), AGENT: pcm(bot)}, "both"
    )

    async with (
        running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as ingest,
        running_recorder(recorder),
        running_analyzer(analyzer, transcriber),
    ):
        for call in (support, hiss):
            report = await simulator.stream_call(
                stream_url(ingest, None), call, realtime=False, token=TOKEN
            )
            assert report.completed
        await wait_for_transcripts(store, 2)

    rows = sorted(table_rows(store, "turns", "support-1-0"), key=lambda r: r["turn"])
    measured = [
        (
            r["speaker"],
            r["start_ms"],
            r["end_ms"],
            r["response_latency_ms"],
            r["barge_in"],
            r["yield_ms"],
        )
        for r in rows
    ]
    with capsys.disabled():
        print("\nscripted vs measured turns (speaker, start, end, latency, barge-in, yield):")
        for p, m in zip(truth, measured, strict=False):
            print(
                f"  {p.speaker:8s} {p.start_ms:6d} {p.end_ms:6d} {p.latency_ms!s:>6} "
                f"{p.barge_in!s:5} {p.yield_ms!s:>5} | {m}"
            )
    # One turn per scripted line (the line with a 400 ms pause inside is one turn), in order.
    speaker = {CALLER: "caller", AGENT: "agent"}
    assert [r["speaker"] for r in rows] == [speaker[p.speaker] for p in truth]
    assert [r["turn"] for r in rows] == list(range(len(truth)))
    for p, r in zip(truth, rows, strict=True):
        assert abs(r["start_ms"] - p.start_ms) <= TOLERANCE_MS, (p, r)
        assert abs(r["end_ms"] - p.end_ms) <= TOLERANCE_MS, (p, r)
        if p.latency_ms is None:
            assert r["response_latency_ms"] is None, r
        else:
            assert abs(r["response_latency_ms"] - p.latency_ms) <= TOLERANCE_MS, (p, r)
            assert r["responds_to"] == r["turn"] - 1
    # Barge-ins exactly on the scripted set, with their yields.
    assert [r["turn"] for r in rows if r["barge_in"]] == [
        i for i, p in enumerate(truth) if p.barge_in
    ]
    for p, r in zip(truth, rows, strict=True):
        if p.barge_in:
            assert p.yield_ms is not None and abs(r["yield_ms"] - p.yield_ms) <= TOLERANCE_MS
        else:
            assert r["yield_ms"] is None
    # The words of each turn are the line's (tiny.en on espeak-ng; cut lines say less).
    said = [set(normalize_words(p.text)) for p in truth]
    heard = [normalize_words(r["text"]) for r in rows]
    with capsys.disabled():
        print("  turn texts:", [r["text"] for r in rows])
    assert all(r["words"] == len(r["text"].split()) for r in rows)
    assert all(h for h in heard), "every turn has words"
    found = sum(w in s for h, s in zip(heard, said, strict=True) for w in h)
    assert found >= 0.8 * sum(map(len, heard)), "words land in the turn that said them"

    figures = {m["track"]: m for m in table_rows(store, "turn_metrics", "support-1-0")}
    for track, side in ((AGENT, "outbound"), (CALLER, "inbound")):
        latencies = [
            p.latency_ms
            for p in truth
            if p.speaker == track and p.latency_ms is not None and not p.barge_in
        ]
        row = figures[side]
        for column, expected in (
            ("response_latency_p50_ms", nearest_rank(latencies, 50)),
            ("response_latency_p90_ms", nearest_rank(latencies, 90)),
            ("response_latency_max_ms", max(latencies)),
        ):
            assert expected is not None and abs(row[column] - expected) <= TOLERANCE_MS, (
                column,
                row,
                latencies,
            )
        assert row["barge_ins"] == sum(p.barge_in for p in truth if p.speaker == track)
        assert row["turns"] == sum(p.speaker == track for p in truth)
    agent_yields = [p.yield_ms for p in truth if p.barge_in and p.speaker == CALLER]
    assert figures["outbound"]["barged_into"] == len(agent_yields) == 3
    agent_yield = nearest_rank([y for y in agent_yields if y is not None], 50)
    assert agent_yield is not None
    assert abs(figures["outbound"]["yield_p50_ms"] - agent_yield) <= TOLERANCE_MS
    assert abs(figures["outbound"]["first_turn_ms"] - truth[0].start_ms) <= TOLERANCE_MS
    [pause] = dead_air(truth, 2000)
    call_row = figures["call"]
    assert call_row["dead_air_count"] == 1
    assert abs(call_row["dead_air_ms"] - pause) <= TOLERANCE_MS

    # -60 dBFS noise on the caller's line: no caller turn is invented; the bot's one turn.
    hiss_rows = table_rows(store, "turns", "hiss-1-0")
    assert [(r["speaker"], r["response_latency_ms"], r["barge_in"]) for r in hiss_rows] == [
        ("agent", None, False)
    ]
    assert abs(hiss_rows[0]["start_ms"] - 800) <= TOLERANCE_MS
    hiss_figures = {m["track"]: m for m in table_rows(store, "turn_metrics", "hiss-1-0")}
    assert hiss_figures["inbound"]["turns"] == 0

    # The documented examples, through `callrec query` over the bucket.
    for name, value in (
        ("ARCHIVE_URI", f"s3://{bucket}"),
        ("S3_ENDPOINT_URL", minio.endpoint),
        ("S3_ACCESS_KEY_ID", minio.access_key),
        ("S3_SECRET_ACCESS_KEY", minio.secret_key),
    ):
        monkeypatch.setenv(f"CALLREC_{name}", value)

    def query(sql: str) -> list[dict[str, Any]]:
        capsys.readouterr()
        assert main(["query", "--format", "json", sql]) == 0
        result: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
        return result

    slow = query(doc_example("Calls where the agent's p90 response latency is over 800 ms"))
    assert [r["call_id"] for r in slow] == ["support-1"]  # its p90 is the 3 s answer
    assert abs(slow[0]["response_latency_p90_ms"] - 3000) <= TOLERANCE_MS
    late = query(doc_example("Barge-ins the agent yielded to in over 1 s"))
    [long_yield] = [i for i, p in enumerate(truth) if p.yield_ms and p.yield_ms > 1000]
    assert [(r["call_id"], r["turn"]) for r in late] == [("support-1", long_yield)]
    dialogue = query(doc_example("A call's turns as a dialogue"))
    assert len(dialogue) == len(truth) and dialogue[0]["speaker"] == "agent"
    for sql in re.findall(r"```sql\n(.*?)```", DOCS.read_text(), re.S):
        if "turn" in sql:
            query(sql)  # every turn-taking example runs on the real archive


async def test_marks_of_a_twoway_stream_land_on_the_manifest_timeline(
    kafka: stack.KafkaServer,
    minio: stack.MinioServer,
    media_topic: str,
    tmp_path: Path,
) -> None:
    """A bot's twoway stream through ingest, Kafka and the recorder: its marks, with
    Wavix's event times, are placed on the recording's timeline by name."""
    bucket = new_bucket(minio)
    store = s3_store(minio, bucket)
    recorder = recorder_settings(kafka, minio, media_topic, bucket, str(tmp_path / "spill"))
    start_ns = parse_iso_ns(wx.EVENT_TIME)  # the start message's event_time
    assert start_ns is not None

    def at(ms: int) -> str:
        return iso_time(start_ns + ms * 1_000_000)

    async with (
        running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as ingest,
        running_recorder(recorder),
    ):
        async with connect(stream_url(ingest)) as ws:
            await ws.send(wx.start("bot-1", "s-bot", "inbound", "twoway").decode())
            for i in range(1, 101):  # 2 s of audio
                await ws.send(wx.media("bot-1", "s-bot", i, wx.frame(i)).decode())
                if i == 40:
                    await ws.send(
                        wx.mark("bot-1", "s-bot", "greeting-played", 41, at(800)).decode()
                    )
            await ws.send(wx.mark("bot-1", "s-bot", "answer-1-played", 102, at(1930)).decode())
            await ws.send(wx.stop("bot-1", "s-bot").decode())
        [key] = await wait_for_manifests(store, 1)
    manifest = load_manifest(store, key)
    assert manifest.clock == "event_time"
    assert manifest.timeline, "the manifest lists the marks"
    assert [(e.at_ms, e.kind, e.name, e.seq, e.clock) for e in manifest.timeline] == [
        (800, "mark", "greeting-played", 41, "event_time"),
        (1930, "mark", "answer-1-played", 102, "event_time"),
    ]
    assert [s.marks for s in manifest.streams] == [2]
