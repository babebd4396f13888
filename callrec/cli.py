"""The ``callrec`` command line: one entry point, one subcommand per service or tool.

Services read their settings from ``CALLREC_*`` environment variables (see
docs/configuration.md); tools such as ``simulate`` take flags. Heavy imports
happen inside each subcommand so that ``callrec --help`` stays instant.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from callrec import commands_control
from callrec.logs import configure_logging

if TYPE_CHECKING:
    from infra.settings import ProcessSettings
    from ingest.server import IngestServer
    from ingest.settings import IngestSettings
    from workers.analyzer.settings import AnalyzerSettings

log = logging.getLogger("callrec")


def _refused(command: str, settings: IngestSettings) -> bool:
    """Print why ingest may not start this way (no token, not loopback), if it may not."""
    from ingest.errors import AnonymousAccessRefused
    from ingest.server import check_access

    try:
        check_access(settings)
    except AnonymousAccessRefused as exc:
        print(f"callrec {command}: {exc}", file=sys.stderr)
        return True
    return False


def run_until_signalled(
    main: Callable[[asyncio.Event], Awaitable[None]],
    settings: ProcessSettings,
) -> None:
    """Run ``main(stop)`` where ``stop`` is set on SIGTERM or SIGINT, on the event loop
    named by ``settings.event_loop`` (``CALLREC_EVENT_LOOP``: ``uvloop`` or ``asyncio``),
    with the process heap tuned by ``settings.heap_*`` (infra/heap.py)."""
    from infra.heap import keep_freed_heap

    keep_freed_heap(settings.heap_trim_threshold_bytes, settings.heap_top_pad_bytes,
                    settings.heap_mmap_threshold_bytes)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    if settings.event_loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner_:
            runner_.run(runner())
    else:
        asyncio.run(runner())


def _ingest(args: argparse.Namespace) -> int:
    from callrec import wiring
    from ingest.settings import IngestSettings

    settings = IngestSettings()
    configure_logging(settings.log_level)
    if _refused("ingest", settings):
        return 2

    async def main(stop: asyncio.Event) -> None:
        server = wiring.ingest_server(settings)
        await server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Readiness goes at once, not when the main task next runs (after whatever
            # the loop reads in this turn: picows answers a probe inside data_received).
            loop.add_signal_handler(sig, _stop_taking_streams, server, stop)
        # The port line lets scripts and tests find a server started with port 0.
        print(f"callrec ingest listening on port {server.port}", flush=True)
        await stop.wait()
        log.info("SIGTERM: draining for up to %.0fs", settings.ingest_drain_grace_s)
        await server.drain()

    run_until_signalled(main, settings)
    return 0


def _stop_taking_streams(server: IngestServer, stop: asyncio.Event) -> None:
    server.stop_taking_streams()
    stop.set()


def _recorder(args: argparse.Namespace) -> int:
    from callrec import wiring
    from infra.probes import run_with_probes
    from workers.recorder.settings import RecorderSettings

    settings = RecorderSettings()
    configure_logging(settings.log_level)

    async def main(stop: asyncio.Event) -> None:
        store = settings.open_store()
        await asyncio.to_thread(store.check)
        service = wiring.recorder_service(settings, store)
        await run_with_probes(service, settings.recorder_host, settings.recorder_port, stop)

    run_until_signalled(main, settings)
    return 0


def _analyzer(args: argparse.Namespace) -> int:
    from workers.analyzer.settings import AnalyzerSettings
    from workers.analyzer.transcribe import WhisperTranscriber

    settings = AnalyzerSettings()
    configure_logging(settings.log_level)
    if args.backfill:
        return _backfill(args, settings)
    if args.since or args.force:
        print("callrec analyzer: --since and --force go with --backfill", file=sys.stderr)
        return 2

    from callrec import wiring
    from infra.probes import run_with_probes

    async def main(stop: asyncio.Event) -> None:
        store = settings.open_store()
        await asyncio.to_thread(store.check)
        transcriber = await asyncio.to_thread(WhisperTranscriber, settings.transcriber_config())
        service = wiring.analyzer_service(settings, store, transcriber)
        await run_with_probes(service, settings.analyzer_host, settings.analyzer_port, stop)

    run_until_signalled(main, settings)
    return 0


def _backfill(args: argparse.Namespace, settings: AnalyzerSettings) -> int:
    from workers.analyzer.backfill import backfill
    from workers.analyzer.transcribe import WhisperTranscriber

    store = settings.open_store()
    store.check()
    transcriber = WhisperTranscriber(settings.transcriber_config())
    report = backfill(store, transcriber, settings.analysis_config(), since=args.since,
                      force=args.force, progress=not args.no_progress)
    print(f"backfill: {report.selected} recordings, {report.analyzed} analysed, "
          f"{report.skipped} already done, {len(report.failed)} failed", file=sys.stderr)
    for rec_id, reason in sorted(report.failed.items()):
        print(f"  failed: {rec_id} ({reason})", file=sys.stderr)
    return 1 if report.failed else 0


def _query(args: argparse.Namespace) -> int:
    from callrec.query import QueryError, query
    from infra.settings import ArchiveSettings

    settings = ArchiveSettings()
    configure_logging(settings.log_level)
    sql = sys.stdin.read() if args.sql == "-" else args.sql
    try:
        text = query(args.archive or settings.archive_uri, sql, args.format, settings,
                     max_width=args.max_width)
    except QueryError as exc:
        print(f"callrec query: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _up(args: argparse.Namespace) -> int:
    from callrec.up import EmbeddedPipeline, UpSettings

    settings = UpSettings()
    configure_logging(settings.log_level)
    if _refused("up", settings):
        return 2

    async def main(stop: asyncio.Event) -> None:
        embedded = EmbeddedPipeline(settings)
        ready = asyncio.Event()
        running = asyncio.create_task(embedded.run(stop, ready))
        await asyncio.wait([running, asyncio.create_task(ready.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set():
            port = embedded.ingest.port
            print(f"callrec up: Wavix stream_url ws://<host>:{port}/v1/stream?token=<token>; "
                  f"archive {embedded.archive_uri}; data {embedded.data_dir}; "
                  f"console http://<host>:{embedded.console.port}/", flush=True)
        await running

    run_until_signalled(main, settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callrec",
        description="Record and analyse live phone calls streamed by Wavix.",
        epilog="Services are configured with CALLREC_* environment variables "
        "(docs/configuration.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ingest = sub.add_parser(
        "ingest",
        help="WebSocket server for Wavix media streams; publishes to Kafka",
        description="Accept Wavix media streams at /v1/stream and publish them to Kafka.",
    )
    ingest.set_defaults(func=_ingest)
    recorder = sub.add_parser(
        "recorder",
        help="Kafka consumer that reassembles calls and archives WAV + manifest + Parquet",
        description="Consume callrec.media, reassemble each call's tracks and archive "
        "finished recordings to S3 (or a directory), exactly once.",
    )
    recorder.set_defaults(func=_recorder)
    up = sub.add_parser(
        "up",
        help="ingest + recorder + analyzer in one process, no Kafka or S3 needed",
        description="Run the whole pipeline in one process on a local bus and a local "
        "archive directory (CALLREC_UP_DATA_DIR). Same code as the distributed services.",
    )
    up.set_defaults(func=_up)
    analyzer = sub.add_parser(
        "analyzer",
        help="Kafka consumer that transcribes recordings and writes segments and metrics",
        description="Consume callrec.recordings; transcribe each archived recording with "
        "faster-whisper (speaker = channel), compute call metrics, and write the transcript "
        "JSON and the segments and metrics tables. With --backfill, analyse the recordings "
        "already in the archive instead (no Kafka) and exit.",
    )
    analyzer.add_argument("--backfill", action="store_true",
                          help="analyse archived recordings not yet analysed with the current "
                          "model and settings, then exit (resumable)")
    analyzer.add_argument("--since", type=_date, metavar="YYYY-MM-DD",
                          help="backfill only recordings that started on or after this UTC day")
    analyzer.add_argument("--force", action="store_true",
                          help="backfill: analyse again even what is up to date")
    analyzer.add_argument("--no-progress", action="store_true",
                          help="backfill: no progress bar")
    analyzer.set_defaults(func=_analyzer)
    query = sub.add_parser(
        "query",
        help="SQL (DuckDB) over the calls, segments and metrics tables",
        description="Run one SQL statement with DuckDB over the archive's tables: calls, "
        "segments, metrics (each with the partition column date). The archive is "
        "CALLREC_ARCHIVE_URI or --archive: a directory or s3://bucket/prefix (S3 settings "
        "from CALLREC_S3_*). Examples: docs/analytics.md.",
    )
    query.add_argument("sql", help='the SQL, e.g. "SELECT count(*) FROM calls"; - reads stdin')
    query.add_argument("--archive", metavar="URI",
                       help="directory or s3://bucket/prefix (default: CALLREC_ARCHIVE_URI)")
    query.add_argument("--format", choices=("table", "csv", "json"), default="table",
                       help="output format (default: table)")
    query.add_argument("--max-width", type=int, default=80, metavar="N",
                       help="table format: cut cells longer than N characters (0: never)")
    query.set_defaults(func=_query)

    from callrec import commands_compliance, commands_console, simulator

    simulator.register(sub)
    commands_control.register(sub)
    commands_compliance.register(sub)
    commands_console.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
