"""``callrec simulate FILE --emulate-wavix WEBHOOK``: play all of Wavix for a control plane.

Serves Wavix's REST API (``--wavix-port``, key ``--wavix-api-key``), places ``--calls``
calls carrying the audio of FILE (``--unanswered`` of them ring and end busy), posts
their events to the webhook URL, and streams each call's audio to the ``stream_url``
the control plane asks for. Point the control plane at it with
``CALLREC_WAVIX_API_URL=http://127.0.0.1:<port>`` and the same API key.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter

from callrec.emulator.calls import EmulatedCall
from callrec.emulator.webhook import WavixEmulator
from callrec.logs import configure_logging
from infra.audio import AudioFileError
from schemas.codecs import codec_by_id


def add_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group(
        "Wavix emulator (docs/control.md)",
        "With --emulate-wavix, act as Wavix's REST API, call events and media gateway "
        "together instead of streaming to --url directly.",
    )
    group.add_argument(
        "--emulate-wavix",
        metavar="WEBHOOK_URL",
        help="post call events to this control-plane webhook URL",
    )
    group.add_argument(
        "--wavix-port",
        type=int,
        default=8099,
        help="port of the emulated REST API (default: %(default)s)",
    )
    group.add_argument(
        "--wavix-api-key",
        default="emulator-key",
        help="API key the emulated REST API accepts (default: %(default)s)",
    )
    group.add_argument(
        "--unanswered", type=int, default=0, metavar="N", help="of the calls, N ring and end busy"
    )
    group.add_argument(
        "--from-number",
        default="+442079460000",
        help="caller number of the calls; the call index is added",
    )
    group.add_argument("--to-number", default="+15550100", help="called number")
    group.add_argument("--direction", choices=("inbound", "outbound"), default="inbound")


def run(args: argparse.Namespace) -> int:
    # The simulator's audio loading; imported here because callrec.simulator imports us.
    from callrec.simulator.calls import build_calls

    configure_logging("INFO" if args.verbose else "WARNING")
    codec = codec_by_id(args.codec)
    try:
        [template] = build_calls(args.file, calls=1, codec=codec)
    except AudioFileError as exc:
        print(f"callrec simulate: {exc}", file=sys.stderr)
        return 2
    base = int(args.from_number.lstrip("+") or "0")
    calls = [
        EmulatedCall(
            call_id=f"emu-{n:04d}",
            from_number=f"+{base + n}",
            to_number=args.to_number,
            direction=args.direction,
            answered=n > args.unanswered,
            tracks=dict(template.tracks),
            codec=codec,
        )
        for n in range(1, args.calls + 1)
    ]

    async def main() -> Counter[int]:
        emulator = WavixEmulator(
            api_key=args.wavix_api_key, webhook_url=args.emulate_wavix, port=args.wavix_port
        )
        await emulator.start()
        print(f"Wavix emulator: REST API on {emulator.api_url}, {len(calls)} calls", flush=True)
        try:
            await emulator.place_calls(calls, spacing_s=0.05)
        finally:
            await emulator.close()
        print(
            f"streams started: {sum(emulator.rest.starts.values())}, "
            f"start requests: {len(emulator.rest.start_requests)}"
        )
        return Counter(emulator.webhook_statuses)

    statuses = asyncio.run(main())
    print(f"webhook answers: {dict(statuses)}")
    return 0 if set(statuses) <= {200} else 1
