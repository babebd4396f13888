"""Helpers for the compliance tests: archives built by the recorder's and analyzer's own code."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

from callrec import cli
from infra.store import ObjectStore
from schemas.tables import recording_id
from tests.analyzerutil import START_NS, FakeTranscriber, archive_call, noise, pcm
from workers.analyzer.analysis import AnalysisConfig, analyze_recording

DAY_NS = 86_400 * 1_000_000_000


def archive_calls(
    store: ObjectStore,
    work_dir: Path,
    call_ids: Sequence[str],
    *,
    start_ns: int = START_NS,
    analyse: bool = True,
    ms: int = 400,
) -> list[str]:
    """Archive each call (two tracks of noise, real reassembly and WAV), analysed with a
    fake transcriber when ``analyse``; returns their recording ids."""
    ids = []
    for n, call_id in enumerate(call_ids):
        tracks = {
            "inbound": pcm(noise(ms, 24000, -20, seed=n)),
            "outbound": pcm(noise(ms, 24000, -26, seed=100 + n)),
        }
        event = archive_call(store, call_id, tracks, work_dir, start_ns=start_ns + n * 1000)
        if analyse:
            analyze_recording(store, event, FakeTranscriber(), AnalysisConfig())
        ids.append(recording_id(call_id, 0))
    return ids


def run_cli(*argv: str) -> tuple[int, str]:
    """``callrec argv...`` in this process: (exit status, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


def run_json(*argv: str) -> tuple[int, object]:
    code, text = run_cli(*argv, "--json")
    return code, json.loads(text)


def flip_byte(store: ObjectStore, key: str, offset: int = 100) -> None:
    data = bytearray(store.get_bytes(key))
    data[offset] ^= 0x01
    store.put_bytes(key, bytes(data), "application/octet-stream")
