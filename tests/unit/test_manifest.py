"""The manifest: deterministic JSON with custody and counts, derived from records only."""

from __future__ import annotations

import json
import random
from pathlib import Path

import msgspec
import pytest

from infra.wav import write_wav
from schemas import envelope
from schemas.codecs import L16_24K
from schemas.custody import iso_time
from schemas.manifest import (
    MANIFEST_VERSION,
    Manifest,
    ObjectEntry,
    decode_manifest,
    manifest_bytes,
)
from workers.recorder.manifests import build_manifest, calls_row
from workers.recorder.reassembly import RecordingAssembler

CALL = "call-7"
T0 = 1_714_607_999_990_000_000  # 2024-05-01T23:59:59.990Z: the next ms crosses midnight


def records() -> list[envelope.Record]:
    out: list[envelope.Record] = []
    for sid, channel, pod, at in (
        ("in-1", "inbound", "pod-a", 0),
        ("out-1", "outbound", "pod-b", 40),
    ):
        out.append(
            envelope.StreamStarted(
                call_id=CALL,
                stream_id=sid,
                stream_type="oneway",
                channel=channel,  # type: ignore[arg-type]
                codec=L16_24K.id,
                ingest_pod=pod,
                connection_id=f"conn-{sid}",
                received_ns=T0 + at * 1_000_000,
                event_time=iso_time(T0 + at * 1_000_000),
            )
        )
        chunks = [c for c in range(6) if (sid, c) != ("in-1", 3)]  # one lost chunk
        for c in chunks:
            out.append(
                envelope.MediaChunk(
                    call_id=CALL,
                    stream_id=sid,
                    track=channel,  # type: ignore[arg-type]
                    chunk=c,
                    timestamp_ms=c * 20,
                    codec=L16_24K.id,
                    payload=bytes([c + 1]) * 960,
                    received_ns=T0 + (at + c * 20 + 3) * 1_000_000,
                )
            )
        out.append(
            envelope.StreamClosed(
                call_id=CALL,
                stream_id=sid,
                reason="stop",
                detail="stop received",
                ingest_pod=pod,
                connection_id=f"conn-{sid}",
                received_ns=T0 + 10**9,
                chunks=len(chunks),
                invalid=0,
            )
        )
    return out


def manifest_of(recs: list[envelope.Record], tmp: Path) -> Manifest:
    asm = RecordingAssembler(CALL, tmp / "spool")
    for r in recs:
        asm.add(r)
    result = asm.finalize()
    size, sha = write_wav(tmp / "a.wav", result.codec, result.track_paths, result.track_lengths)
    asm.discard()
    objects = [
        ObjectEntry(key="tables/calls/x.parquet", sha256="b" * 64, size=10, content_type="x"),
        ObjectEntry(key="recordings/a.wav", sha256=sha, size=size, content_type="audio/wav"),
    ]
    return build_manifest(result, part=0, recording_id=f"{CALL}-0", objects=objects)


def test_a_replay_writes_the_same_bytes(tmp_path):
    recs = records()
    first = manifest_bytes(manifest_of(recs, tmp_path / "a"))
    assert manifest_bytes(manifest_of(recs, tmp_path / "b")) == first


def test_only_the_arrival_counters_depend_on_arrival_order(tmp_path):
    recs = records()
    first = msgspec.to_builtins(manifest_of(recs, tmp_path / "a"))
    random.Random(3).shuffle(recs)
    second = msgspec.to_builtins(manifest_of(recs, tmp_path / "b"))

    def without_arrival(node: object) -> object:
        if isinstance(node, dict):
            return {
                k: without_arrival(v) for k, v in node.items() if k not in ("out_of_order", "late")
            }
        if isinstance(node, list):
            return [without_arrival(v) for v in node]
        return node

    assert first != second
    assert without_arrival(first) == without_arrival(second)


def test_manifest_json_has_sorted_keys_and_round_trips(tmp_path):
    m = manifest_of(records(), tmp_path)
    data = manifest_bytes(m)
    assert data.endswith(b"}\n")
    doc = json.loads(data)

    def check_sorted(node: object) -> None:
        if isinstance(node, dict):
            assert list(node) == sorted(node)
            for v in node.values():
                check_sorted(v)
        elif isinstance(node, list):
            for v in node:
                check_sorted(v)

    check_sorted(doc)
    assert decode_manifest(data) == msgspec.structs.replace(
        m, objects=sorted(m.objects, key=lambda o: o.key)
    )
    assert [o["key"] for o in doc["objects"]] == ["recordings/a.wav", "tables/calls/x.parquet"]


def test_manifest_content(tmp_path):
    m = manifest_of(records(), tmp_path)
    assert m.version == MANIFEST_VERSION
    assert (m.codec, m.sample_rate, m.tracks) == ("L16/24000", 24000, ["inbound", "outbound"])
    assert m.channels == {"inbound": 0, "outbound": 1}
    assert m.start_time == "2024-05-01T23:59:59.990Z"
    assert m.date == "2024-05-01"
    assert m.clock == "event_time"
    assert m.duration_ms == 160
    assert not m.complete
    assert m.reason == "stream in-1: gaps, 1 chunks missing"
    inbound, outbound = m.streams
    assert (inbound.ingest_pods, outbound.ingest_pods) == (["pod-a"], ["pod-b"])
    assert outbound.offset_ms == 40
    assert inbound.first_arrival == "2024-05-01T23:59:59.993000Z"
    assert inbound.published == inbound.chunks == 5
    counts = m.counts["inbound"]
    assert (counts.gaps, counts.gap_ms, counts.chunks) == (1, 20, 5)
    assert m.counts["outbound"].lead_ms == 40


def test_calls_row_sums_counts(tmp_path):
    m = manifest_of(records(), tmp_path)
    row = calls_row(
        m,
        recording_key="recordings/a/audio.wav",
        manifest_key="recordings/a/manifest.json",
        wav_sha256="a" * 64,
        wav_bytes=123,
    )
    assert row["start_time"] == T0 // 1_000_000
    assert row["end_time"] - row["start_time"] == row["duration_ms"] == 160
    assert (row["gaps"], row["gap_ms"], row["missing_chunks"]) == (1, 20, 1)
    assert row["incomplete_reason"] == m.reason
    assert row["ingest_pods"] == ["pod-a", "pod-b"]
    assert m.end_time == "2024-05-02T00:00:00.150Z"


@pytest.mark.parametrize(
    ("ns", "digits", "text"),
    [
        (0, 3, "1970-01-01T00:00:00.000Z"),
        (T0 + 999_999, 3, "2024-05-01T23:59:59.990Z"),  # truncated, never rounded up
        (T0 + 123_456, 6, "2024-05-01T23:59:59.990123Z"),
        (T0, 0, "2024-05-01T23:59:59Z"),
    ],
)
def test_iso_time(ns, digits, text):
    assert iso_time(ns, digits) == text


def test_marks_go_to_an_optional_timeline_that_version_1_readers_skip(tmp_path):
    """Without marks the manifest has no ``timeline`` (its bytes are what they were before
    the field existed); with marks it lists them, round-trips, and a manifest written
    before the field reads with it unset."""
    plain = manifest_bytes(manifest_of(records(), tmp_path / "a"))
    assert b'"timeline"' not in plain
    assert not decode_manifest(plain).timeline
    marks = [envelope.MarkReceived(call_id=CALL, stream_id="out-1", name=f"reply-{i}", seq=i,
                                   received_ns=T0 + (40 + 100 * i) * 1_000_000,
                                   event_time=iso_time(T0 + (40 + 100 * i) * 1_000_000))
             for i in (2, 1)]
    with_marks = manifest_of(records() + marks, tmp_path / "b")
    data = manifest_bytes(with_marks)
    doc = json.loads(data)
    assert [(e["at_ms"], e["name"], e["kind"], e["clock"]) for e in doc["timeline"]] == [
        (140, "reply-1", "mark", "event_time"), (240, "reply-2", "mark", "event_time")]
    assert decode_manifest(data) == with_marks
    # A reader of version 1 that predates the field ignores it (msgspec drops unknown keys).
    del doc["timeline"]
    assert decode_manifest(json.dumps(doc).encode()).timeline is msgspec.UNSET
