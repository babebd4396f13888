"""``callrec console``: the review web app; ``--hash-password`` makes a users-file line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import signal
import sys
from typing import Any


def register(sub: Any) -> None:
    console = sub.add_parser(
        "console",
        help="review web app: find, play and check recordings in a browser",
        description="Serve the review console (docs/console.md) over the archive "
        "(CALLREC_ARCHIVE_URI) on CALLREC_CONSOLE_PORT. Login: built-in users from "
        "CALLREC_CONSOLE_USERS_FILE or a trusted OIDC proxy (CALLREC_CONSOLE_TRUSTED_PROXIES).",
    )
    console.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password (prompted, or from stdin when not a terminal) "
        "and print its Argon2id hash for the users file, then exit",
    )
    console.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.hash_password:
        return _hash_password()
    from callrec.logs import configure_logging
    from console.app import Console
    from console.server import ConsoleServer
    from console.settings import ConsoleSettings

    settings = ConsoleSettings()
    configure_logging(settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        store = settings.open_store()
        await asyncio.to_thread(store.check)
        # Built here as callrec.wiring.console does, without importing callrec.wiring:
        # that loads every service (Kafka clients, ingest, the workers), 11 MiB of the
        # console's 300 MiB (docs/benchmarks.md, review console).
        server = ConsoleServer(
            Console(settings, store).app(), settings.console_host, settings.console_port
        )
        await server.start()
        print(
            f"callrec console on http://127.0.0.1:{server.port}/ (archive {settings.archive_uri})",
            flush=True,
        )
        await stop.wait()
        await server.stop()

    asyncio.run(main())
    return 0


def _hash_password() -> int:
    from console.users import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("callrec console: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("callrec console: use at least 8 characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0
