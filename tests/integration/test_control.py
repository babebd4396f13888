"""The control plane end to end: emulated Wavix calls -> webhook -> Kafka -> controller ->
emulator REST -> stream -> ingest -> recorder -> archive, with real Kafka and MinIO."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from callrec import query
from control import metrics as control_metrics
from control.settings import ControlSettings
from deploy.local import stack
from infra.store.s3 import S3Store
from schemas import envelope
from tests.integration.controlutil import (
    WEBHOOK_SECRET,
    Stack,
    call,
    running_stack,
    wait_until,
)
from tests.integration.recorderutil import load_manifest, wait_for_manifests, wav_channels

RULES = """
[[rule]]
name = "london"
from = ["+4420"]
channel = "both"
"""


def control_rows(settings: ControlSettings) -> dict[str, dict[str, Any]]:
    con = query.connect(settings.archive_uri, settings)
    columns, rows = query.run(con, "SELECT * FROM control ORDER BY call_id")
    return {r[columns.index("call_id")]: dict(zip(columns, r, strict=True)) for r in rows}


def calls_rows(settings: ControlSettings) -> dict[str, dict[str, Any]]:
    con = query.connect(settings.archive_uri, settings)
    columns, rows = query.run(con, "SELECT * FROM calls ORDER BY call_id")
    return {r[columns.index("call_id")]: dict(zip(columns, r, strict=True)) for r in rows}


def manifests_by_call(store: S3Store) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for key in store.list_keys("recordings/"):
        if key.endswith("/manifest.json"):
            m = load_manifest(store, key)
            found.setdefault(m.call_id, []).append(m)
    return found


def metric(counter: Any, *labels: str) -> float:
    return float(counter.labels(*labels)._value.get())


async def test_calls_recorded_by_rule_with_their_numbers_and_reasons_for_the_rest(
    kafka: stack.KafkaServer, minio: stack.MinioServer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    calls = [
        call(n, from_number=f"+442079460{n:03d}", to_number=f"+1555010{n:02d}")
        for n in range(1, 16)
    ]
    calls += [call(n, from_number=f"+3314460{n:03d}") for n in range(16, 19)]  # no rule
    calls += [call(n, from_number=f"+442079460{n:03d}", answered=False) for n in (19, 20)]
    async with running_stack(kafka, minio, tmp_path, control_rules_file=str(rules)) as st:
        await st.emulator.place_calls(calls, spacing_s=0.02)
        assert set(st.emulator.webhook_statuses) == {200}
        await wait_for_manifests(st.store, 15, timeout=60)
        await wait_until(lambda: len(control_rows(st.settings)) == 20, 60, "control rows")

        manifests = manifests_by_call(st.store)
        assert sorted(manifests) == [f"call-{n:02d}" for n in range(1, 16)]
        for c in calls[:15]:
            [m] = manifests[c.call_id]
            assert len(m.streams) == 1
            assert m.call is not None
            assert (m.call.from_number, m.call.to_number, m.call.direction) == (
                c.from_number,
                c.to_number,
                "inbound",
            )
            assert m.tracks == ["inbound", "outbound"]
            data = st.store.get_bytes(f"recordings/{m.recording_id}/audio.wav")
            _, channels = wav_channels(data)
            # Every sample is the call's audio from where the stream began, to its end.
            [stream] = st.emulator.calls[c.call_id].streams.values()
            assert stream.first_frame is not None
            begin = stream.first_frame * 960
            assert channels[0] == c.tracks["inbound"][begin:]
            assert channels[1] == c.tracks["outbound"][begin:]
        rows = control_rows(st.settings)
        recorded = {k for k, r in rows.items() if r["recorded"]}
        assert recorded == {c.call_id for c in calls[:15]}
        reasons = {k: r["reason"] for k, r in rows.items() if not r["recorded"]}
        assert reasons == {
            "call-16": "no_rule_matched",
            "call-17": "no_rule_matched",
            "call-18": "no_rule_matched",
            "call-19": "not_answered: busy",
            "call-20": "not_answered: busy",
        }
        assert rows["call-16"]["from_number"] == "+3314460016"
        table = calls_rows(st.settings)
        assert table["call-03"]["from_number"] == "+442079460003"
        assert table["call-03"]["to_number"] == "+155501003"
        assert table["call-03"]["direction"] == "inbound"
        assert table["call-03"]["completed_time"] is not None
        assert dict(st.emulator.rest.starts) == {c.call_id: 1 for c in calls[:15]}

        # At-least-once delivery: every webhook again, twice. Nothing new is started.
        requests_before = len(st.emulator.rest.start_requests)
        await st.emulator.replay_webhooks(times=2)
        await _drained(st)
        assert len(st.emulator.rest.start_requests) == requests_before
        assert dict(st.emulator.rest.starts) == {c.call_id: 1 for c in calls[:15]}
        assert sorted(manifests_by_call(st.store)) == sorted(manifests)


async def _drained(st: Stack) -> None:
    """Wait until the controller group has committed every call event."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=st.settings.kafka_bootstrap,
        group_id=st.settings.control_group_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        tps = [
            TopicPartition(st.topics.calls, p)
            for p in sorted(consumer.partitions_for_topic(st.topics.calls) or [])
        ]
        ends = await consumer.end_offsets(tps)

        async def done() -> bool:
            for tp in tps:
                committed = await consumer.committed(tp)
                if (committed or 0) < ends[tp]:
                    return False
            return True

        await wait_until(done, 60, "controller commits")
    finally:
        await consumer.stop()


async def test_wavix_answering_500_twice_then_200_records_the_call(
    kafka: stack.KafkaServer, minio: stack.MinioServer, tmp_path: Path
) -> None:
    async with running_stack(kafka, minio, tmp_path) as st:
        st.emulator.rest.inject(500, 500)
        await st.emulator.place_calls([call(1, from_number="+100", prefix="retry")])
        [key] = await wait_for_manifests(st.store, 1)
        assert load_manifest(st.store, key).call_id == "retry-01"
        assert [c for c, _ in st.emulator.rest.start_requests] == ["retry-01"] * 3
        await wait_until(lambda: "retry-01" in control_rows(st.settings), 30)
        assert control_rows(st.settings)["retry-01"]["recorded"] is True


async def test_wavix_answering_401_is_an_outcome_with_reason_metric_and_log(
    kafka: stack.KafkaServer,
    minio: stack.MinioServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = metric(control_metrics.STREAM_STARTS, "rejected")
    not_recorded = metric(control_metrics.NOT_RECORDED, "stream_start_failed")
    async with running_stack(kafka, minio, tmp_path) as st:
        st.emulator.rest.inject(401)
        with caplog.at_level(logging.ERROR, logger="control.controller"):
            await st.emulator.place_calls([call(1, from_number="+100", prefix="denied")])
            await wait_until(lambda: "denied-01" in control_rows(st.settings), 30)
        row = control_rows(st.settings)["denied-01"]
        assert row["recorded"] is False
        assert row["reason"].startswith("stream_start_failed: 401")
        assert len(st.emulator.rest.start_requests) == 1  # a 4xx is never retried
        assert metric(control_metrics.STREAM_STARTS, "rejected") == before + 1
        assert metric(control_metrics.NOT_RECORDED, "stream_start_failed") == not_recorded + 1
        assert any(
            "denied-01" in r.getMessage() and "401" in r.getMessage() for r in caplog.records
        )
        assert not manifests_by_call(st.store)


async def test_bad_webhooks_get_their_status_and_nothing_is_published(
    kafka: stack.KafkaServer, minio: stack.MinioServer, tmp_path: Path
) -> None:
    async with running_stack(kafka, minio, tmp_path, control_max_body_bytes=2048) as st:
        base = f"http://127.0.0.1:{st.api_port}/v1/wavix/events/"
        unknown_before = metric(control_metrics.WEBHOOK_EVENTS, "unknown_type")
        async with httpx.AsyncClient() as client:
            wrong = await client.post(base + "x" * 40, json={"id": "c", "event_type": "answered"})
            assert (wrong.status_code, wrong.text) == (404, "not found\n")
            missing = await client.post(f"http://127.0.0.1:{st.api_port}/v1/nothing")
            assert (missing.status_code, missing.text) == (404, "not found\n")
            bad = await client.post(base + WEBHOOK_SECRET, content=b"{not json")
            assert bad.status_code == 400
            no_id = await client.post(base + WEBHOOK_SECRET, json={"event_type": "answered"})
            assert no_id.status_code == 400
            big = await client.post(
                base + WEBHOOK_SECRET, content=b'{"id": "c", "x": "' + b"a" * 4096 + b'"}'
            )
            assert big.status_code == 413
            unknown = await client.post(
                base + WEBHOOK_SECRET, json={"uuid": 42, "event_type": "teleported"}
            )
            assert unknown.status_code == 200
        assert metric(control_metrics.WEBHOOK_EVENTS, "unknown_type") == unknown_before + 1
        consumer = AIOKafkaConsumer(
            st.topics.calls,
            bootstrap_servers=kafka.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            got = await consumer.getmany(timeout_ms=2000)
            assert not any(got.values())
        finally:
            await consumer.stop()


async def test_a_per_call_token_for_another_call_is_refused_while_the_right_call_records(
    kafka: stack.KafkaServer, minio: stack.MinioServer, tmp_path: Path
) -> None:
    from callrec.emulator.gateway import LiveCall, MediaStream
    from ingest import metrics as ingest_metrics
    from schemas import streamtoken
    from tests.integration.controlutil import TOKEN_KEYS

    async with running_stack(kafka, minio, tmp_path) as st:
        refused_before = float(ingest_metrics.CALL_TOKEN_MISMATCH._value.get())
        victim = call(1, from_number="+100", prefix="victim", ms=3000)
        thief = call(2, from_number="+100", prefix="thief", ms=1000)
        place = asyncio.create_task(st.emulator.place_calls([victim]))
        await wait_until(lambda: st.emulator.rest.starts["victim-01"] == 1, 30)
        # The thief got hold of the victim's stream URL and streams its own call with it.
        keys = streamtoken.parse_keys(TOKEN_KEYS)
        token = streamtoken.mint("victim-01", "k1", keys["k1"])
        live = LiveCall(thief, answered_at=asyncio.get_running_loop().time())
        stolen = MediaStream(
            live,
            "stolen-stream",
            f"ws://127.0.0.1:{st.ingest.port}/v1/stream?token={token}",
            "both",
        )
        stolen.start()
        assert stolen.task is not None
        await stolen.task
        assert stolen.close_code == 1008
        assert float(ingest_metrics.CALL_TOKEN_MISMATCH._value.get()) == refused_before + 1
        await place
        [key] = await wait_for_manifests(st.store, 1)
        manifest = load_manifest(st.store, key)
        assert manifest.call_id == "victim-01"
        assert [s.stream_id for s in manifest.streams] != ["stolen-stream"]
        assert "thief-01" not in manifests_by_call(st.store)


async def test_envelope_lifecycle_records_reach_the_media_topic(
    kafka: stack.KafkaServer, minio: stack.MinioServer, tmp_path: Path
) -> None:
    async with running_stack(kafka, minio, tmp_path) as st:
        await st.emulator.place_calls([call(1, from_number="+100", prefix="life")])
        await wait_for_manifests(st.store, 1)
        consumer = AIOKafkaConsumer(
            st.topics.media,
            bootstrap_servers=kafka.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        events = []
        try:
            async with asyncio.timeout(20):
                while "completed" not in events:
                    for messages in (await consumer.getmany(timeout_ms=500)).values():
                        for m in messages:
                            record = envelope.decode(m.value)
                            if isinstance(record, envelope.CallLifecycle):
                                events.append(record.event)
        finally:
            await consumer.stop()
        assert events == ["answered", "completed"]


async def test_pause_and_resume_make_one_recording_silent_in_the_pause(
    kafka: stack.KafkaServer, minio: stack.MinioServer, tmp_path: Path
) -> None:
    from tests.integration.controlutil import API_TOKEN

    async with running_stack(kafka, minio, tmp_path) as st:
        c = call(1, from_number="+4420", prefix="card", ms=4000)
        place = asyncio.create_task(st.emulator.place_calls([c]))
        live_calls = st.emulator.calls
        await wait_until(
            lambda: (
                "card-01" in live_calls
                and any(s.frames_sent >= 30 for s in live_calls["card-01"].streams.values())
            ),
            30,
        )
        api = f"http://127.0.0.1:{st.api_port}/v1/calls/card-01"
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        async with httpx.AsyncClient() as client:
            denied = await client.post(api + "/pause")
            assert denied.status_code == 401
            paused = await client.post(api + "/pause", headers=auth)
            assert paused.status_code == 202
            [first] = live_calls["card-01"].streams.values()
            assert first.task is not None
            await first.task  # Wavix stopped the stream on DELETE
            await asyncio.sleep(0.5)  # the card number is read out: not recorded
            resumed = await client.post(api + "/resume", headers=auth)
            assert resumed.status_code == 202
        await place
        [key] = await wait_for_manifests(st.store, 1)
        manifest = load_manifest(st.store, key)
        first_s, second_s = live_calls["card-01"].streams.values()
        assert first_s.first_frame is not None and second_s.first_frame is not None
        assert len(manifest.streams) == 2
        f0, f1, f2 = (
            first_s.first_frame,
            first_s.first_frame + first_s.frames_sent,
            second_s.first_frame,
        )
        assert f2 > f1
        [pause] = manifest.pauses
        assert (pause.start_ms, pause.end_ms) == ((f1 - f0) * 20, (f2 - f0) * 20)
        _, channels = wav_channels(
            st.store.get_bytes(f"recordings/{manifest.recording_id}/audio.wav")
        )
        frame = 960
        for track, wav in zip(("inbound", "outbound"), channels, strict=True):
            source = c.tracks[track]
            expected = (
                source[f0 * frame : f1 * frame] + bytes((f2 - f1) * frame) + source[f2 * frame :]
            )
            assert wav == expected
        row = calls_rows(st.settings)["card-01"]
        assert row["paused_ms"] == (f2 - f1) * 20
        await wait_until(lambda: "card-01" in control_rows(st.settings), 30)
        control = control_rows(st.settings)["card-01"]
        assert (control["pauses"], control["stream_starts"], control["recorded"]) == (1, 2, True)


async def test_replayed_webhooks_and_a_controller_killed_mid_run_never_start_a_second_stream(
    kafka: stack.KafkaServer, minio: stack.MinioServer, tmp_path: Path
) -> None:
    import signal

    from tests.integration.controlutil import start_controller_process

    async with running_stack(
        kafka, minio, tmp_path, control_role="api", control_session_timeout_ms=6000
    ) as st:
        first = await start_controller_process(st.settings, tmp_path / "first.log")
        second = await start_controller_process(st.settings, tmp_path / "second.log")
        try:
            calls = [call(n, from_number="+4420", prefix="kill", ms=12_000) for n in range(1, 9)]
            place = asyncio.create_task(st.emulator.place_calls(calls, spacing_s=0.3))
            await wait_until(lambda: len(st.emulator.rest.start_requests) >= 3, 60)
            first.send_signal(signal.SIGKILL)
            await first.wait()
            await st.emulator.replay_webhooks(times=2)  # while calls are live, too
            await place
            await st.emulator.replay_webhooks(times=2)
            await _drained(st)
            await wait_until(lambda: len(control_rows(st.settings)) == len(calls), 60)
            rows = control_rows(st.settings)
            requests: dict[str, int] = {}
            for call_id, _ in st.emulator.rest.start_requests:
                requests[call_id] = requests.get(call_id, 0) + 1
            assert all(n == 1 for n in requests.values()), requests
            await wait_until(
                lambda: len(manifests_by_call(st.store)) == sum(st.emulator.rest.starts.values()),
                60,
            )
            manifests = manifests_by_call(st.store)
            for c in calls:
                started = st.emulator.rest.starts[c.call_id]
                assert started <= 1
                assert len(manifests.get(c.call_id, [])) == started
                if not started:  # the killed controller's POST never reached Wavix
                    assert rows[c.call_id]["reason"] in ("stream_start_unknown",), rows
        finally:
            for proc in (first, second):
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    await proc.wait()


async def test_callrec_simulate_emulates_wavix_for_a_control_plane(
    kafka: stack.KafkaServer, minio: stack.MinioServer, tmp_path: Path
) -> None:
    """``callrec simulate FILE --emulate-wavix WEBHOOK``: the CLI plays Wavix end to end."""
    import socket
    import sys

    from tests.integration.controlutil import API_KEY

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    jfk = Path(__file__).parents[1] / "data" / "jfk.flac"
    async with running_stack(
        kafka, minio, tmp_path, wavix_api_url=f"http://127.0.0.1:{port}"
    ) as st:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callrec.cli",
            "simulate",
            str(jfk),
            "--emulate-wavix",
            st.webhook_url,
            "--calls",
            "2",
            "--unanswered",
            "1",
            "--wavix-port",
            str(port),
            "--wavix-api-key",
            API_KEY,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert "streams started: 1" in out.decode()
        [key] = await wait_for_manifests(st.store, 1)
        manifest = load_manifest(st.store, key)
        assert manifest.call_id == "emu-0002"
        assert manifest.call and manifest.call.from_number == "+442079460002"
        assert 10_000 < manifest.duration_ms < 12_000
        await wait_until(lambda: len(control_rows(st.settings)) == 2, 30)
        assert control_rows(st.settings)["emu-0001"]["reason"] == "not_answered: busy"


async def test_every_event_is_forwarded_to_the_users_url_with_retries(
    kafka: stack.KafkaServer, minio: stack.MinioServer, tmp_path: Path
) -> None:
    """A number has one callback URL: callrec forwards what it gets, retrying a 5xx, and
    recording does not wait for it."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from infra.webserver import WebServer

    received: list[bytes] = []
    answers = iter([500])

    async def collect(request: Request) -> PlainTextResponse:
        status = next(answers, 200)
        if status == 200:
            received.append(await request.body())
        return PlainTextResponse("", status_code=status)

    server = WebServer(
        Starlette(routes=[Route("/hook", collect, methods=["POST"])]), "127.0.0.1", 0
    )
    await server.start()
    try:
        async with running_stack(
            kafka, minio, tmp_path, control_forward_url=f"http://127.0.0.1:{server.port}/hook"
        ) as st:
            await st.emulator.place_calls([call(1, from_number="+100", prefix="fwd")])
            await wait_for_manifests(st.store, 1)
            await wait_until(lambda: len(received) == len(st.emulator.posted), 30)
            assert sorted(received) == sorted(st.emulator.posted)
    finally:
        await server.stop()


async def test_with_confirmation_a_real_call_records_and_a_forged_event_does_not(
    kafka: stack.KafkaServer, minio: stack.MinioServer, tmp_path: Path
) -> None:
    """CALLREC_CONTROL_CONFIRM_EVENTS: an answered event is acted on only once Wavix's
    GET /v1/calls/{id} knows the call; an event someone forged with the secret URL is not."""
    async with running_stack(kafka, minio, tmp_path, control_confirm_events=True) as st:
        await st.emulator.place_calls([call(1, from_number="+100", prefix="real")])
        [key] = await wait_for_manifests(st.store, 1)
        assert load_manifest(st.store, key).call_id == "real-01"
        forged = {"id": "forged-01", "event_type": "answered", "from": "+100",
                  "to": "+15550100", "direction": "inbound"}
        async with httpx.AsyncClient() as client:
            assert (await client.post(st.webhook_url, json=forged)).status_code == 200
        await wait_until(lambda: "forged-01" in control_rows(st.settings), 30)
        row = control_rows(st.settings)["forged-01"]
        assert row["recorded"] is False and row["reason"] == "unconfirmed"
        assert "forged-01" not in [c for c, _ in st.emulator.rest.start_requests]
