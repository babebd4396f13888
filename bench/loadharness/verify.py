"""Every call the load sent, against what the archive holds, sample by sample.

For each call of the load (its :class:`~bench.loadharness.loadgen.CallReport`):

- sent to the end (``stop`` + normal close): exactly one recording (part 0) whose
  manifest says complete and whose WAV channels are byte-identical to the
  inbound and outbound audio sent (rebuilt by :mod:`bench.loadharness.calls`);
- cut by the system (socket lost, or closed early by the server): exactly one
  recording, incomplete, whose reason names the cause, and whose channels are
  byte-identical to the *beginning* of what was sent (what Kafka acknowledged
  before the cut; nothing reordered, duplicated or filled in);
- never started (HTTP 401/503, connection refused): no recording.

Also per recording: stop→archive latency = the manifest's S3 ``LastModified``
minus the last stream close the ingest pod wrote (custody ``closes[].time``).
"""

from __future__ import annotations

import concurrent.futures
import io
import wave
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.loadharness import calls as callaudio
from schemas.custody import parse_iso_ns
from schemas.manifest import decode_manifest


@dataclass
class Verdict:
    call_id: str
    expected: str
    """``complete``, ``cut``, ``either`` (stop sent, but the socket died before the
    server's close frame) or ``none``."""
    ok: bool
    problem: str = ""
    frames_sent: int = 0
    frames_archived: int = 0
    reason: str = ""
    """The manifest's incomplete reason."""
    stop_to_archive_s: float | None = None
    archived_at: float | None = None
    """Unix time of the manifest's LastModified."""


@dataclass
class Verification:
    verdicts: list[Verdict] = field(default_factory=list)
    other_recordings: int = 0
    """Recordings of call ids the load did not send (hostile clients)."""

    @property
    def lost(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]


def list_manifests(client: Any, bucket: str) -> dict[str, float]:
    """manifest key -> LastModified (Unix time) of every recording in the bucket."""
    out: dict[str, float] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix="recordings/"):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/manifest.json"):
                out[obj["Key"]] = obj["LastModified"].timestamp()
    return out


def _call_of(key: str) -> tuple[str, int]:
    rec_id = key.split("/")[1]
    call_id, _, part = rec_id.rpartition("-")
    return call_id, int(part) if part.isdigit() else -1


def _wav_channels(data: bytes) -> list[bytes]:
    with wave.open(io.BytesIO(data)) as w:
        assert w.getsampwidth() == 2 and w.getframerate() == 24000
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        channels = w.getnchannels()
    return [frames[i::channels].tobytes() for i in range(channels)]


def verify(client: Any, bucket: str, reports: list[dict[str, Any]],
           threads: int = 8) -> Verification:
    manifests = list_manifests(client, bucket)
    by_call: dict[str, list[tuple[int, str]]] = {}
    for key in manifests:
        call_id, part = _call_of(key)
        by_call.setdefault(call_id, []).append((part, key))
    sent_ids = {r["call_id"] for r in reports}
    result = Verification(other_recordings=sum(
        len(parts) for call_id, parts in by_call.items() if call_id not in sent_ids))

    def one(report: dict[str, Any]) -> Verdict:
        return _verify_call(client, bucket, report, sorted(by_call.get(report["call_id"], [])),
                            manifests)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        result.verdicts = list(pool.map(one, reports))
    return result


def _expected(report: dict[str, Any]) -> str:
    if report["status"] != 101:
        return "none"
    if report["stopped"]:
        # stop sent: complete, unless the socket died before ingest read the stop
        return "complete" if report["close_code"] == 1000 else "either"
    return "cut"


def _verify_call(client: Any, bucket: str, report: dict[str, Any],
                 parts: list[tuple[int, str]], manifests: dict[str, float]) -> Verdict:
    expected = _expected(report)
    v = Verdict(report["call_id"], expected, ok=False, frames_sent=report["frames_sent"])
    if expected == "none":
        v.ok = not parts
        v.problem = "" if v.ok else f"{len(parts)} recordings for a call never started"
        return v
    if not parts:
        v.problem = "no recording"
        return v
    if len(parts) > 1 or parts[0][0] != 0:
        v.problem = f"split into parts {[p for p, _ in parts]}"
        return v
    key = parts[0][1]
    manifest = decode_manifest(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    v.reason = manifest.reason
    v.archived_at = manifests[key]
    closes = [parse_iso_ns(c.time) or 0 for s in manifest.streams for c in s.closes]
    if closes:
        v.stop_to_archive_s = v.archived_at - max(closes) / 1e9
    wav_key = key.replace("manifest.json", "audio.wav")
    channels = _wav_channels(client.get_object(Bucket=bucket, Key=wav_key)["Body"].read())
    v.frames_archived = len(channels[0]) // (2 * callaudio.FRAME_SAMPLES) if channels else 0
    if len(channels) != 2:
        v.problem = f"{len(channels)} channels"
        return v
    index, frames = report["index"], report["frames"]
    if expected == "either":
        expected = "complete" if manifest.complete else "cut"
    if expected == "complete":
        if not manifest.complete:
            v.problem = f"incomplete: {manifest.reason}"
            return v
        for track, got in zip(callaudio.TRACKS, channels, strict=True):
            if got != callaudio.track_bytes(index, track, frames):
                v.problem = f"{track} audio differs from what was sent"
                return v
        v.ok = True
        return v
    # Cut by the system: incomplete with a reason, audio a prefix of what was sent.
    if manifest.complete:
        v.problem = "complete although the stream was cut"
        return v
    sent = report["frames_sent"]
    frame_bytes = 2 * callaudio.FRAME_SAMPLES
    for track, got in zip(callaudio.TRACKS, channels, strict=True):
        counts = manifest.counts.get(track)
        if counts is None or counts.gaps or counts.lead_ms:
            v.problem = f"{track}: gaps or lead in a cut recording ({counts})"
            return v
        # The cut may fall between a tick's inbound and outbound frame: the shorter
        # track is padded with silence to the longer one (docs/formats.md).
        real = counts.chunks * frame_bytes
        want = callaudio.track_bytes(index, track, frames)[:real]
        if got[:real] != want or got[real:] != bytes(len(got) - real):
            v.problem = f"{track} audio is not the beginning of what was sent"
            return v
    v.frames_archived = min(c.chunks for c in manifest.counts.values())
    if v.frames_archived > sent:
        v.problem = f"{v.frames_archived} frames archived, only {sent} sent"
        return v
    v.ok = True
    return v
