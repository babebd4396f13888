"""Review console benchmark: page latencies, audio seek and memory over a large archive.

One command::

    .venv/bin/python -m bench.console_bench [--calls 100000] [--write]

1. **Archive.** ``--calls`` synthetic recordings written straight as Parquet in the
   archive's own layout (one ``calls``, ``segments`` and ``metrics`` file per
   recording, Hive date partitions over 60 days; ``--segments`` transcript segments
   each, from a 2,000-word vocabulary), plus ``--real`` recordings archived and
   analysed by the recorder's and analyzer's own code (WAV, peaks, manifest,
   transcript) for the call page and the audio. A local directory.
2. **Console.** ``callrec console`` as a real subprocess on that archive, with a fresh
   ``CALLREC_CONSOLE_INDEX_DIR``; the time until ``/readyz`` (the calls index built, by
   a child process), the peak RSS of that child, and the console's RSS.
3. **Requests**, one at a time, ``--requests`` of each, logged in as a listener:
   ``/healthz`` (the baseline: the same server, no work), a filtered calls page
   (random duration/overtalk/date filters and sorts), a transcript search (a random
   vocabulary word), a call page (time to the first byte of the response), and an
   audio seek (a 64 KiB Range request at a random offset of a WAV). p50/p95 and the
   ratio of each p95 to the baseline's.
4. **Restart.** The console stopped and started again on the index it kept: the time
   to ``/readyz``, its RSS, and the same requests again.

Targets (issue 13): filtered calls page p95 <= 300 ms, transcript search p95 <= 1 s,
call page first byte <= 200 ms, audio seek <= 100 ms, console RSS <= 300 MiB.
``--write`` replaces the ``## Review console`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from bench.harness import report
from bench.harness.procfs import proc_mem_kib
from infra.store.local import LocalStore
from schemas.tables import CALLS, METRICS, SEGMENTS, table_key
from tests.consoleutil import PASSWORD, archive_analyzed, tone, users_file

REPO = Path(__file__).resolve().parents[1]
DAY0 = dt.datetime(2025, 9, 1, tzinfo=dt.UTC)
TARGETS = {"calls": 0.300, "search": 1.0, "call": 0.200, "seek": 0.100}


def vocabulary(rng: random.Random, size: int = 2000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 9))))
    return sorted(words)


def write_synthetic(root: Path, calls: int, segments: int, seed: int = 7) -> list[str]:
    """``calls`` recordings' rows of the three tables, one file each, as the pipeline does."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    opts: dict[str, Any] = {"compression": "zstd"}
    for i in range(calls):
        rec = f"syn{i:07d}-0"
        start = DAY0 + dt.timedelta(seconds=rng.randrange(60 * 86400))
        duration = rng.randrange(5_000, 900_000)
        date = start.date().isoformat()
        keys = {"call_id": [f"syn{i:07d}"], "part": [0], "recording_id": [rec]}
        call = pa.table(
            {
                **keys,
                "start_time": [start],
                "end_time": [start + dt.timedelta(milliseconds=duration)],
                "duration_ms": [duration],
                "tracks": [["inbound", "outbound"]],
                "channels": [2],
                "complete": [rng.random() > 0.05],
                "incomplete_reason": [None],
                "codec": ["L16/24000"],
                "sample_rate": [24000],
                "recording_key": [f"recordings/{rec}/audio.wav"],
                "manifest_key": [f"recordings/{rec}/manifest.json"],
                "wav_sha256": ["0" * 64],
                "wav_bytes": [duration * 96],
                "gaps": [0],
                "gap_ms": [0],
                "missing_chunks": [0],
                "duplicates": [0],
                "out_of_order": [0],
                "overlaps": [0],
                "streams": [2],
                "ingest_pods": [["ingest-0"]],
            },
            schema=CALLS,
        )
        n = segments
        bounds = sorted(rng.randrange(duration) for _ in range(2 * n))
        seg = pa.table(
            {
                "call_id": [f"syn{i:07d}"] * n,
                "part": [0] * n,
                "recording_id": [rec] * n,
                "track": [("inbound", "outbound")[k % 2] for k in range(n)],
                "speaker": [("caller", "agent")[k % 2] for k in range(n)],
                "segment": [k // 2 for k in range(n)],
                "start_ms": bounds[0::2],
                "end_ms": bounds[1::2],
                "text": [
                    " ".join(rng.choice(words) for _ in range(rng.randint(6, 16))) for _ in range(n)
                ],
                "confidence": [0.9] * n,
            },
            schema=SEGMENTS,
        )
        talk = rng.randrange(duration)
        metric_rows = []
        for track in ("inbound", "outbound", "call"):
            metric_rows.append(
                {
                    "call_id": f"syn{i:07d}",
                    "part": 0,
                    "recording_id": rec,
                    "track": track,
                    "talk_ms": talk,
                    "silence_ms": duration - talk,
                    "overtalk_ms": rng.randrange(30_000) if track == "call" else 0,
                    "interruptions": rng.randrange(20),
                    "longest_monologue_ms": talk // 3,
                    "words_per_minute": 150.0,
                    "rms_dbfs": -20.0,
                    "peak_dbfs": -3.0,
                    "clipping_ratio": rng.random() / 1000,
                    "gaps": 0,
                    "duplicates": 0,
                    "out_of_order": 0,
                    "jitter_ms": 2.0,
                }
            )
        met = pa.Table.from_pylist(metric_rows, schema=METRICS)
        for name, table in (("calls", call), ("segments", seg), ("metrics", met)):
            path = root / table_key(name, date, rec)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path, **opts)
        if i and i % 10000 == 0:
            print(f"  {i} recordings written", file=sys.stderr)
    return words


def timed(fn: Callable[[], None], count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return times


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def login(client: httpx.Client) -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token, page.text[:200]
    answer = client.post(
        "/login", data={"csrf": token.group(1), "user": "listener", "password": PASSWORD}
    )
    assert answer.status_code == 303, answer.status_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--segments", type=int, default=10, help="segments per recording")
    parser.add_argument("--real", type=int, default=20, help="recordings with audio")
    parser.add_argument("--requests", type=int, default=100, help="of each kind")
    parser.add_argument(
        "--index-memory-mb",
        type=int,
        default=96,
        help="CALLREC_CONSOLE_INDEX_MEMORY_MB of the console",
    )
    parser.add_argument("--dir", type=Path, help="keep the archive here (reused if present)")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)

    work = args.dir or Path(tempfile.mkdtemp(prefix="console-bench-"))
    root = work / "archive"
    marker = work / f"synthetic-{args.calls}x{args.segments}"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        began = time.perf_counter()
        write_synthetic(root, args.calls, args.segments)
        print(
            f"archive: {args.calls} recordings in {time.perf_counter() - began:.0f} s",
            file=sys.stderr,
        )
        store = LocalStore(root)
        scratch = work / "scratch"
        scratch.mkdir(exist_ok=True)
        for i in range(args.real):
            archive_analyzed(
                store,
                f"real{i:03d}",
                {"inbound": tone(30_000), "outbound": tone(30_000, freq=300)},
                [(k * 2000, k * 2000 + 1500, f"real words number {k}") for k in range(12)],
                scratch,
            )
        marker.write_text("done\n")
    real = [f"real{i:03d}-0" for i in range(args.real)]
    words = vocabulary(random.Random(7))
    users = users_file(work / "users")
    index_dir = work / "index"
    shutil.rmtree(index_dir, ignore_errors=True)  # the first start builds it

    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    env.update(
        {
            "CALLREC_ARCHIVE_URI": str(root),
            "CALLREC_CONSOLE_USERS_FILE": str(users),
            "CALLREC_CONSOLE_SESSION_SECRET": "bench-" + "x" * 40,
            "CALLREC_CONSOLE_PORT": "0",
            "CALLREC_CONSOLE_HOST": "127.0.0.1",
            "CALLREC_CONSOLE_INDEX_REFRESH_S": "3600",
            "CALLREC_CONSOLE_INDEX_MEMORY_MB": str(args.index_memory_mb),
            "CALLREC_CONSOLE_INDEX_DIR": str(index_dir),
            "CALLREC_LOG_LEVEL": "WARNING",
            # plain http to localhost: httpx keeps Secure cookies off it
            "CALLREC_CONSOLE_COOKIE_SECURE": "false",
        }
    )
    sizes = {rec: (root / "recordings" / rec / "audio.wav").stat().st_size for rec in real}
    first = run_console(env, args.requests, Requests(words, real, sizes))
    print(f"first start: {first}", file=sys.stderr)
    # The same console again on the index it kept: ready without reading the archive.
    again = run_console(env, args.requests, Requests(words, real, sizes))
    print(f"restart: {again}", file=sys.stderr)
    text = render(args, first, again)
    print(text)
    if args.write:
        report.replace_section(REPO / "docs" / "benchmarks.md", "## Review console", text)
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (the index build process of a console)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


class Requests:
    """The four kinds of request, with the random choices of one run."""

    def __init__(self, words: list[str], real: list[str], sizes: dict[str, int]) -> None:
        self.words, self.real, self.sizes = words, real, sizes
        self.rng = random.Random(11)

    def calls_page(self, client: httpx.Client) -> None:
        rng = self.rng
        lo = rng.randrange(0, 600)
        day = (DAY0 + dt.timedelta(days=rng.randrange(50))).date()
        params = rng.choice(
            [
                {"min_duration_s": str(lo), "sort": "duration_ms"},
                {"min_overtalk_s": str(rng.randrange(5, 25)), "complete": "yes"},
                {
                    "date_from": day.isoformat(),
                    "date_to": (day + dt.timedelta(days=7)).isoformat(),
                },
                {"min_interruptions": "10", "sort": "interruptions", "order": "asc"},
            ]
        )
        assert client.get("/calls", params=params).status_code == 200

    def search(self, client: httpx.Client) -> None:
        response = client.get("/calls", params={"q": self.rng.choice(self.words)})
        assert response.status_code == 200

    def call_page(self, client: httpx.Client) -> None:
        with client.stream("GET", f"/calls/{self.rng.choice(self.real)}") as response:
            assert response.status_code == 200
            next(response.iter_raw())  # the first byte of the body

    def seek(self, client: httpx.Client) -> None:
        rec = self.rng.choice(self.real)
        start = self.rng.randrange(self.sizes[rec] - 65536)
        response = client.get(
            f"/calls/{rec}/audio",
            params={"ps": "bench"},
            headers={"range": f"bytes={start}-{start + 65535}"},
        )
        assert response.status_code == 206 and len(response.content) == 65536


class Run:
    """One start of the console: time to ready, memory, request latencies."""

    def __init__(self) -> None:
        self.ready_s = 0.0
        self.rss_loaded = self.rss = self.hwm = 0.0
        self.build_peak = 0.0
        """Largest RSS seen of an index build process (MiB), 0 when none ran."""
        self.results: dict[str, list[float]] = {}

    def __str__(self) -> str:
        return (
            f"ready in {self.ready_s:.1f} s, RSS {self.rss_loaded:.0f} MiB loaded, "
            f"{self.rss:.0f} after the requests, peak {self.hwm:.0f}; build process peak "
            f"{self.build_peak:.0f} MiB; p95 ms "
            + ", ".join(f"{k} {p(v, 0.95) * 1000:.1f}" for k, v in self.results.items())
        )


def run_console(env: dict[str, str], requests: int, kinds: Requests) -> Run:
    run = Run()
    began = time.perf_counter()
    proc = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "callrec"), "console"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = re.search(r"http://127.0.0.1:(\d+)/", line)
        assert port, f"callrec console said {line!r}"
        base = f"http://localhost:{port.group(1)}"
        client = httpx.Client(base_url=base, timeout=120)
        while client.get("/readyz").status_code != 200:
            for child in children(proc.pid):
                mem = proc_mem_kib(child)
                if mem:
                    run.build_peak = max(run.build_peak, mem[1] / 1024)
            time.sleep(0.2)
        run.ready_s = time.perf_counter() - began
        run.rss_loaded = (proc_mem_kib(proc.pid) or (0, 0))[0] / 1024
        login(client)
        for fn in (kinds.calls_page, kinds.search, kinds.call_page, kinds.seek):  # warm-up
            fn(client)
        run.results = {
            "baseline": timed(lambda: client.get("/healthz").raise_for_status(), requests),
            "calls": timed(lambda: kinds.calls_page(client), requests),
            "search": timed(lambda: kinds.search(client), requests),
            "call": timed(lambda: kinds.call_page(client), requests),
            "seek": timed(lambda: kinds.seek(client), requests),
        }
        run.rss, run.hwm = ((v / 1024) for v in (proc_mem_kib(proc.pid) or (0, 0)))
    finally:
        proc.terminate()
        proc.wait(60)
    return run


def render(args: argparse.Namespace, first: Run, again: Run) -> str:
    results = first.results
    base = p(results["baseline"], 0.95)
    worst = max(first.rss_loaded, first.hwm, again.rss_loaded, again.hwm)
    verdict = "met" if worst <= 300 else "**not met**"
    names = {
        "baseline": "`/healthz` (baseline)",
        "calls": "filtered calls page",
        "search": "transcript search",
        "call": "call page, first byte",
        "seek": "audio seek (64 KiB Range)",
    }
    rows = []
    for key, values in results.items():
        target = TARGETS.get(key)
        after = again.results[key]
        rows.append(
            [
                names[key],
                f"{p(values, 0.5) * 1000:.1f}",
                f"{p(values, 0.95) * 1000:.1f}",
                f"{p(values, 0.95) / base:.0f}x",
                f"{p(after, 0.95) * 1000:.1f}",
                f"<= {target * 1000:.0f} ms" if target else "",
                ("yes" if max(p(values, 0.95), p(after, 0.95)) <= target else "**no**")
                if target
                else "",
            ]
        )
    table = report.markdown_table(
        [
            "Request",
            "p50 ms",
            "p95 ms",
            "p95 vs baseline",
            "p95 ms after a restart",
            "Target",
            "Met",
        ],
        rows,
    )
    return "\n".join(
        [
            "## Review console",
            "",
            f"`python -m bench.console_bench --calls {args.calls} --segments {args.segments} "
            f"--requests {args.requests} --index-memory-mb {args.index_memory_mb}` on "
            f"{report.machine()}. The machine was shared with "
            "other engineers' test runs: the figures are indicative; the ratios to the "
            "baseline (the same server answering `/healthz`, measured in the same run) are what "
            "to compare. A local archive, one Parquet file per recording and table "
            f"({args.calls * 3:,} files), {args.calls * args.segments:,} transcript segments. "
            "The console is started twice on the same `CALLREC_CONSOLE_INDEX_DIR`: the first "
            "start builds the index (in a child process), the second finds it.",
            "",
            table,
            "",
            f"First start: calls index built and loaded (start to `/readyz`) in "
            f"{first.ready_s:.1f} s; the build process peaked at {first.build_peak:.0f} MiB "
            f"and exited. Console RSS {first.rss_loaded:.0f} MiB once ready, "
            f"{first.rss:.0f} MiB after the requests, peak {first.hwm:.0f} MiB.",
            "",
            f"Restart on the kept index: ready in {again.ready_s:.1f} s; RSS "
            f"{again.rss_loaded:.0f} MiB once ready, {again.rss:.0f} MiB after the requests, "
            f"peak {again.hwm:.0f} MiB. Target <= 300 MiB: {verdict}.",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
