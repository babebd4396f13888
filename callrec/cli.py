"""The ``callrec`` command line: one entry point, one subcommand per service or tool.

Services read their settings from ``CALLREC_*`` environment variables (see
docs/configuration.md); tools such as ``simulate`` take flags. Heavy imports
happen inside each subcommand so that ``callrec --help`` stays instant.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger("callrec")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiokafka logs every failed reconnect at ERROR; our own lines say what matters.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def run_until_signalled(
    main: Callable[[asyncio.Event], Awaitable[None]],
) -> None:
    """Run ``main(stop)`` where ``stop`` is set on SIGTERM or SIGINT."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


def _ingest(args: argparse.Namespace) -> int:
    from callrec.settings import IngestSettings
    from ingest.server import IngestServer

    settings = IngestSettings()
    configure_logging(settings.log_level)

    async def main(stop: asyncio.Event) -> None:
        server = IngestServer(settings)
        await server.start()
        # The port line lets scripts and tests find a server started with port 0.
        print(f"callrec ingest listening on port {server.port}", flush=True)
        await stop.wait()
        log.info("SIGTERM: draining for up to %.0fs", settings.ingest_drain_grace_s)
        await server.drain()

    run_until_signalled(main)
    return 0


def _recorder(args: argparse.Namespace) -> int:
    from callrec.probes import ProbeServer
    from callrec.settings import RecorderSettings
    from workers.recorder.service import RecorderService

    settings = RecorderSettings()
    configure_logging(settings.log_level)

    async def main(stop: asyncio.Event) -> None:
        store = settings.open_store()
        await asyncio.to_thread(store.check)
        service = RecorderService.from_settings(settings, store)
        probes = ProbeServer(settings.recorder_host, settings.recorder_port, lambda: service.ready)
        await probes.start()
        try:
            await service.run(stop)
        finally:
            await probes.close()

    run_until_signalled(main)
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

    from callrec import simulator

    simulator.register(sub)
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
