"""``callrec simulate`` on the command line: its flags, and the only code here that prints."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from callrec.emulator import cli as emulator_cli
from callrec.logs import configure_logging
from callrec.simulator.calls import build_calls
from callrec.simulator.errors import CallsFailed, SimulatorError
from callrec.simulator.faults import Faults
from callrec.simulator.reports import CallReport, summarize
from callrec.simulator.run import run_calls
from infra.audio import AudioFileError
from schemas.codecs import CODECS, DEFAULT_CODEC, codec_by_id

DEFAULT_URL = "ws://127.0.0.1:8080/v1/stream"
TOKEN_ENV = "CALLREC_SIMULATE_TOKEN"


def _exit_code(
    reports: Sequence[CallReport], errors: Mapping[str, SimulatorError], faults: Faults
) -> int:
    """2: some call failed to connect; 1: the server ended a stream early; else 0."""
    if errors:
        return 2
    for stream in (s for r in reports for s in r.streams):
        planned_abort = faults.disconnect_after is not None and stream.close_code is None
        if not planned_abort and (not stream.completed or stream.close_code != 1000):
            return 1
    return 0


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1]")
    return value


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is less than {minimum}")
        return value

    return parse


_EPILOG = """\
examples:
  callrec simulate call.wav                       one real-time call, both tracks
  callrec simulate call.wav --calls 200 --fast    200 concurrent calls, no pacing
  callrec simulate call.wav --layout oneway --drop 0.01 --reorder 0.01 --seed 7

A stereo file's left channel is the inbound track, the right one the outbound
track; a mono file is sent on both. The token comes from --token or the
environment variable CALLREC_SIMULATE_TOKEN.

exit status: 0 every stream ended as planned (stop sent, server closed with
1000, or aborted by --disconnect-after); 1 the server closed some stream
early (see close_codes); 2 some call could not connect (HTTP 401/503,
connection refused) or the file could not be read.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``callrec simulate`` to the command line."""
    p = subparsers.add_parser(
        "simulate",
        help="act as Wavix: stream an audio file as live calls, with faults on demand",
        description="Stream an audio file to an ingest server as Wavix's media gateway "
        "does (connected, start, media every 20 ms, stop), as one or many concurrent "
        "calls, optionally with network faults.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "file",
        metavar="FILE",
        type=Path,
        help="audio file in any format FFmpeg reads (wav, flac, mp3, ...)",
    )
    p.add_argument("--url", default=DEFAULT_URL, help="ingest WebSocket URL (default: %(default)s)")
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"stream token, sent as ?token= (default: ${TOKEN_ENV})",
    )
    p.add_argument(
        "--channel",
        choices=("both", "inbound", "outbound"),
        default="both",
        help="tracks to stream: both, or only inbound (left) or outbound "
        "(right) (default: %(default)s)",
    )
    p.add_argument(
        "--layout",
        choices=("both", "oneway"),
        default="both",
        help="both: one connection carries both tracks; oneway: one "
        "connection per track (default: %(default)s)",
    )
    p.add_argument(
        "--calls",
        type=_count(1),
        default=1,
        metavar="N",
        help="concurrent calls to stream, each with the whole file (default: %(default)s)",
    )
    pacing = p.add_mutually_exclusive_group()
    pacing.add_argument(
        "--realtime",
        dest="realtime",
        action="store_true",
        default=True,
        help="send each 20 ms frame when it is due, like Wavix (default)",
    )
    pacing.add_argument(
        "--fast", dest="realtime", action="store_false", help="send as fast as the server reads"
    )
    p.add_argument(
        "--codec",
        choices=sorted(CODECS),
        default=DEFAULT_CODEC.id,
        help="audio encoding of the payloads; must match the server's "
        "CALLREC_INGEST_CODEC (default: %(default)s, what Wavix sends)",
    )
    faults = p.add_argument_group("faults (drawn per chunk, reproducible with --seed)")
    for flag, what in (
        ("--drop", "a chunk is not sent"),
        ("--duplicate", "a chunk is sent twice"),
        ("--reorder", "a chunk is sent after the next one of its track"),
        (
            "--malformed",
            "an invalid message follows a chunk (non-JSON, bad base64, unknown event, in turn)",
        ),
    ):
        faults.add_argument(
            flag,
            type=_probability,
            default=0.0,
            metavar="P",
            help=f"probability that {what} (default: 0)",
        )
    faults.add_argument(
        "--disconnect-after",
        type=_count(0),
        default=None,
        metavar="N",
        help="abort each connection (TCP reset, no stop) after N media messages",
    )
    faults.add_argument(
        "--string-numbers",
        action="store_true",
        help="send sequence_number, timestamp and chunk as strings, as in Wavix's guide",
    )
    faults.add_argument(
        "--seed", type=int, default=0, help="seed of the fault draws (default: %(default)s)"
    )
    p.add_argument(
        "--call-id-prefix",
        default=None,
        metavar="X",
        help="call ids are X-1, X-2, ... (zero-padded; default: sim-<random hex>, so "
        "that runs do not collide)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary and every stream's report as JSON on stdout",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log each call on stderr")
    emulator_cli.add_arguments(p)
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    """``callrec simulate``: the only function here that prints."""
    from tqdm import tqdm

    if args.emulate_wavix:
        return emulator_cli.run(args)
    configure_logging("INFO" if args.verbose else "WARNING")
    faults = Faults(
        drop=args.drop,
        duplicate=args.duplicate,
        reorder=args.reorder,
        malformed=args.malformed,
        disconnect_after=args.disconnect_after,
        string_numbers=args.string_numbers,
        seed=args.seed,
    )
    codec = codec_by_id(args.codec)
    prefix = args.call_id_prefix or f"sim-{uuid.uuid4().hex[:8]}"
    try:
        calls = build_calls(
            args.file,
            calls=args.calls,
            layout=args.layout,
            channel=args.channel,
            codec=codec,
            call_id_prefix=prefix,
        )
    except AudioFileError as exc:
        print(f"callrec simulate: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    errors: Mapping[str, SimulatorError] = {}
    with tqdm(total=len(calls), unit="call", file=sys.stderr, disable=None) as bar:
        try:
            reports = asyncio.run(
                run_calls(
                    args.url,
                    calls,
                    codec=codec,
                    realtime=args.realtime,
                    faults=faults,
                    token=args.token,
                    on_call_done=lambda _: bar.update(),
                )
            )
        except CallsFailed as exc:
            reports, errors = exc.reports, exc.errors
    summary = summarize(reports, errors, time.perf_counter() - started)
    if args.json:
        summary["reports"] = [dataclasses.asdict(r) for r in reports]
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    return _exit_code(reports, errors, faults)


def _print_summary(summary: Mapping[str, object]) -> None:
    print(
        f"{summary['calls']} calls ({summary['calls_failed']} failed), "
        f"{summary['streams']} streams ({summary['streams_completed']} completed) "
        f"in {summary['elapsed_s']} s"
    )
    print(
        f"media sent {summary['media_sent']} (duplicates {summary['duplicates_sent']}), "
        f"dropped {summary['dropped']}, malformed {summary['malformed_sent']}"
    )
    print(f"close codes: {summary['close_codes']}")
    errors = summary["errors"]
    assert isinstance(errors, dict)
    for call_id, message in list(errors.items())[:10]:
        print(f"failed {call_id}: {message}", file=sys.stderr)
