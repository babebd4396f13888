"""Peak RSS of analysing one recording, for 10 and 120 minutes of stereo L16/24000 audio.

DESIGN.md §7 target: analyzer RAM flat in call length. Each measurement runs in a
fresh subprocess (``ru_maxrss`` is per process) over a local archive holding one
recording of the given length: two channels of low noise with a tone burst every
few seconds, written straight into a WAV (``infra.wav.write_wav``) next to a manifest
that lists its sha256 (so nothing is skipped). The transcriber is the tests' fake
(``tests.analyzerutil.FakeTranscriber``: no model), so the figures are the analyzer's
own memory: download, hashing, decoding, talk detection, levels, the model's input
windows. A real model adds its weights (constant) and its working memory for one
window (docs/benchmarks.md).

Two modes per length, in the same run: ``windowed`` (``analyze_recording`` as it is)
and ``whole`` (the baseline: the WAV read into memory with ``get_bytes`` and decoded
whole with ``read_wav``, each track converted to model input whole, as the analyzer
did before). ::

    python -m bench.analyzer_memory_bench [--minutes 10,120]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec
import numpy as np

from bench.harness.report import machine, replace_section

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
RATE = 24000


def build(root: Path, minutes: int) -> str:
    """An archive with one ``minutes``-long stereo recording; returns its event (JSON)."""
    from infra.store.local import LocalStore
    from infra.wav import write_wav
    from schemas.codecs import L16_24K
    from schemas.layout import manifest_key, wav_key
    from schemas.manifest import ObjectEntry, decode_manifest, manifest_bytes
    from tests.analyzerutil import archive_call, pcm

    store = LocalStore(root / "archive")
    store.check()
    short = np.zeros(RATE, dtype=np.int16)
    event = archive_call(
        store, f"mem-{minutes}", {"inbound": pcm(short), "outbound": pcm(short)}, root
    )
    rng = np.random.default_rng(1)
    raws = []
    for ch in range(2):
        raw = root / f"track-{ch}.raw"
        with raw.open("wb") as f:
            for second in range(minutes * 60):
                x = rng.normal(0, 30, RATE)
                if (second + 3 * ch) % 7 < 2:  # talk: 2 s in every 7, the sides alternate
                    x += 8000 * np.sin(np.arange(RATE) * 2 * np.pi * 220 / RATE)
                f.write(np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes())
        raws.append(raw)
    wav = root / "audio.wav"
    size, sha = write_wav(wav, L16_24K, raws, [r.stat().st_size for r in raws])
    for raw in raws:
        raw.unlink()
    rec_id = event.recording_id
    stored = store.put_file(wav_key(rec_id), wav, sha, "audio/wav")
    wav.unlink()
    manifest = decode_manifest(store.get_bytes(manifest_key(rec_id)))
    objects = [o for o in manifest.objects if o.key != stored.key]
    objects.append(ObjectEntry(key=stored.key, sha256=sha, size=size, content_type="audio/wav"))
    manifest = msgspec.structs.replace(
        manifest, objects=sorted(objects, key=lambda o: o.key), duration_ms=minutes * 60_000
    )
    store.put_bytes(manifest_key(rec_id), manifest_bytes(manifest), "application/json")
    return msgspec.json.encode(event).decode()


def child(root: str, event_json: str, mode: str) -> None:
    """Analyse once in this (fresh) process; print peak RSS figures as JSON."""
    from infra.store.local import LocalStore
    from infra.wav import read_wav
    from schemas import envelope
    from schemas.codecs import L16_24K
    from schemas.layout import wav_key
    from tests.analyzerutil import FakeTranscriber
    from workers.analyzer.analysis import AnalysisConfig, analyze_recording
    from workers.analyzer.transcribe import to_model_input

    store = LocalStore(Path(root) / "archive")
    event = msgspec.json.decode(event_json.encode(), type=envelope.RecordingFinished)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "windowed":
        analyze_recording(store, event, FakeTranscriber(), AnalysisConfig(), force=True)
    else:
        data = store.get_bytes(wav_key(event.recording_id))
        channels = read_wav(data, L16_24K, 2)
        for samples in channels:
            FakeTranscriber().transcribe(to_model_input(samples, RATE))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "peak_kib": peak}))


def measure(root: Path, event_json: str, mode: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.analyzer_memory_bench", "--child", str(root), mode],
        input=event_json,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", default="10,120")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], sys.stdin.read(), args.child[1])
        return
    lengths = [int(m) for m in args.minutes.split(",")]
    rows = []
    for minutes in lengths:
        with tempfile.TemporaryDirectory(prefix="callrec-anmem-") as tmp:
            root = Path(tmp)
            event_json = build(root, minutes)
            for mode in ("windowed", "whole"):
                r = measure(root, event_json, mode)
                rows.append((minutes, mode, r["before_kib"], r["peak_kib"]))
                print(
                    f"{minutes:>4} min {mode:8}: peak RSS {r['peak_kib'] / 1024:7.1f} MiB "
                    f"(after imports {r['before_kib'] / 1024:.1f} MiB)",
                    flush=True,
                )
    peaks = {(m, mode): peak for m, mode, _, peak in rows}
    short, long_ = min(lengths), max(lengths)
    ratio = peaks[(long_, "windowed")] / peaks[(short, "windowed")]
    print(
        f"windowed: {long_} min vs {short} min peak RSS {ratio:.2f}x; "
        f"whole: {peaks[(long_, 'whole')] / peaks[(short, 'whole')]:.2f}x"
    )
    if args.no_report:
        return
    lines = [
        "## Analyzer memory",
        "",
        f"`python -m bench.analyzer_memory_bench --minutes {args.minutes}` on {machine()}; a "
        "shared machine (indicative). Peak RSS of one process analysing one stereo "
        "L16/24000 recording from a local archive, fake transcriber (no model weights): "
        "`windowed` is the analyzer (WAV downloaded to a temp file, read in windows, the "
        "model fed at most 10 minutes of one track at a time, cut in pauses); `whole` is "
        "the baseline of reading the WAV into memory and converting each track whole, as "
        "the analyzer did before.",
        "",
        "| audio | mode | RSS after imports MiB | peak RSS MiB |",
        "|---:|---|---:|---:|",
    ]
    for minutes, mode, before, peak in rows:
        lines.append(f"| {minutes} min | {mode} | {before / 1024:.0f} | {peak / 1024:.0f} |")
    lines += ["", f"Windowed peak, {long_} vs {short} minutes: {ratio:.2f}x."]
    replace_section(REPORT, "## Analyzer memory", "\n".join(lines))


if __name__ == "__main__":
    main()
