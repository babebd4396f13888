"""``callrec up`` with a webhook secret runs the control plane on the local bus."""

from __future__ import annotations

import socket
from pathlib import Path

from callrec import query
from callrec.emulator.webhook import WavixEmulator
from infra.store.local import LocalStore
from schemas.manifest import decode_manifest
from tests.integration.controlutil import API_KEY, TOKEN_KEYS, WEBHOOK_SECRET, call, wait_until
from tests.integration.test_embedded import local_manifests, running_up, up_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_up_records_emulated_calls_by_rule_with_their_numbers(tmp_path: Path) -> None:
    ingest_port, control_port = free_port(), free_port()
    emulator = WavixEmulator(
        api_key=API_KEY,
        webhook_url=f"http://127.0.0.1:{control_port}/v1/wavix/events/{WEBHOOK_SECRET}",
    )
    await emulator.start()
    settings = up_settings(
        tmp_path / "data",
        ingest_port=ingest_port,
        control_host="127.0.0.1",
        control_port=control_port,
        control_webhook_secret=WEBHOOK_SECRET,
        control_stream_url=f"ws://127.0.0.1:{ingest_port}/v1/stream",
        stream_token_keys=TOKEN_KEYS,
        wavix_api_url=emulator.api_url,
        wavix_api_key=API_KEY,
    )
    try:
        async with running_up(settings) as up:
            assert up.control_port == control_port
            calls = [
                call(1, from_number="+4420", prefix="up"),
                call(2, from_number="+4420", prefix="up", answered=False),
            ]
            await emulator.place_calls(calls)
            store = up.store
            assert isinstance(store, LocalStore)
            [key] = await local_manifests(store, 1)
            manifest = decode_manifest(store.get_bytes(key))
            assert manifest.call_id == "up-01"
            assert manifest.call and manifest.call.from_number == "+4420"

            def rows() -> dict[str, object]:
                con = query.connect(str(store.root))
                _, found = query.run(con, "SELECT call_id, reason FROM control")
                return dict(found)

            await wait_until(lambda: len(rows()) == 2, 60)
            assert rows() == {"up-01": None, "up-02": "not_answered: busy"}
    finally:
        await emulator.close()
