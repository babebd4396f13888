"""``callrec control`` (the control plane), ``callrec pause`` and ``callrec resume``.

``control`` runs the webhook/API server and the controller in one process (or one of
them: ``CALLREC_CONTROL_ROLE``); settings from ``CALLREC_*`` (docs/configuration.md).
``pause``/``resume`` ask a running control plane's API to pause or resume the
recording of a call (docs/control.md, "Pause and resume").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from control.api import ControlApi
    from control.controller import Controller
    from control.settings import ControlSettings
    from infra.bus.local import LocalBus
    from infra.store import ObjectStore

log = logging.getLogger("callrec")

API_URL_ENV = "CALLREC_CONTROL_URL"
API_TOKEN_ENV = "CALLREC_CONTROL_API_TOKEN"


@contextlib.asynccontextmanager
async def running_control(
    settings: ControlSettings,
    store: ObjectStore | None = None,
    bus: LocalBus | None = None,
) -> AsyncIterator[tuple[ControlApi | None, int | None, Controller | None]]:
    """Run the HTTP service and/or the controller in this loop until the block ends.

    Yields (api, its port, controller); the parts the role does not run are None.
    """
    from aiokafka.errors import KafkaError

    from callrec import wiring
    from control import metrics as control_metrics
    from infra.webserver import WebServer

    api = web = controller = task = None
    stop = asyncio.Event()
    try:
        if settings.control_role in ("all", "api"):
            api = wiring.control_api(settings, bus)
            web = WebServer(api.app, settings.control_host, settings.control_port)
            await web.start()
            while True:
                try:
                    await api.producer.start()
                    break
                except KafkaError as exc:
                    log.warning("Kafka not reachable yet at %s: %r", settings.kafka_bootstrap, exc)
                    await asyncio.sleep(1)
            api.producer_started = True
            control_metrics.READY.set(1)
            if api.forwarder is not None:
                await api.forwarder.start()
        if settings.control_role in ("all", "controller"):
            if store is None:
                store = settings.open_store()
                await asyncio.to_thread(store.check)
            controller = wiring.controller(settings, store, bus)
            task = asyncio.get_running_loop().create_task(controller.run(stop))
            async with asyncio.timeout(60):
                while not controller.ready:
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.05)
        yield api, web.port if web is not None else None, controller
    finally:
        if api is not None:
            api.draining = True
            control_metrics.READY.set(0)
        stop.set()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        if controller is not None:
            await controller.wavix.close()
        if web is not None:
            await web.stop()
        if api is not None:
            if api.forwarder is not None:
                await api.forwarder.stop()
            if api.producer_started:
                await api.producer.stop()


def _control(args: argparse.Namespace) -> int:
    import signal

    from callrec.logs import configure_logging
    from control.settings import ControlSettings

    settings = ControlSettings()
    configure_logging(settings.log_level)

    async def main(stop: asyncio.Event) -> None:
        async with running_control(settings) as (_, port, _controller):
            if port is not None:
                print(f"callrec control listening on port {port}", flush=True)
            else:
                print("callrec control: controller running", flush=True)
            await stop.wait()
            log.info("SIGTERM: stopping")

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())
    return 0


def _pause_or_resume(args: argparse.Namespace) -> int:
    import httpx

    token = os.environ.get(API_TOKEN_ENV, "")
    if not token:
        print(f"callrec {args.command}: set {API_TOKEN_ENV}", file=sys.stderr)
        return 2
    url = f"{args.url.rstrip('/')}/v1/calls/{args.call_id}/{args.command}"
    try:
        resp = httpx.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    except httpx.HTTPError as exc:
        print(f"callrec {args.command}: {args.url} unreachable: {exc}", file=sys.stderr)
        return 1
    if resp.status_code != 202:
        print(
            f"callrec {args.command}: HTTP {resp.status_code}: {resp.text.strip()}", file=sys.stderr
        )
        return 1
    print(f"{args.command} of call {args.call_id} accepted")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("control", help="run the control plane (Wavix call events -> streams)")
    p.set_defaults(func=_control)
    for name, what in (
        ("pause", "pause the recording of a call (card payments)"),
        ("resume", "resume the recording of a paused call"),
    ):
        p = sub.add_parser(
            name, help=what, description=f"{what}. The token comes from ${API_TOKEN_ENV}."
        )
        p.add_argument("call_id", help="Wavix call id")
        p.add_argument(
            "--url",
            default=os.environ.get(API_URL_ENV, "http://127.0.0.1:8090"),
            help=f"control API base URL (default ${API_URL_ENV} or http://127.0.0.1:8090)",
        )
        p.set_defaults(func=_pause_or_resume, command=name)
