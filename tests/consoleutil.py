"""Helpers for the console's tests and benchmark: archives, users, a running console.

- :func:`archive_analyzed` archives a call through the recorder's code and analyses it
  with the analyzer's code (a scripted transcriber: the words are the test's).
- :func:`users_file` writes a users file with one user per role.
- :func:`running_console` serves a console with uvicorn on port 0 in a thread of its
  own (its own event loop), as `callrec console` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from console.app import Console
from console.server import ConsoleServer
from console.settings import ConsoleSettings
from console.users import hash_password
from infra.store import ObjectStore
from schemas import envelope
from tests.analyzerutil import START_NS, archive_call
from workers.analyzer.analysis import AnalysisConfig, analyze_recording
from workers.analyzer.transcribe import Segment

PASSWORD = "correct horse battery"
ROLES = ("viewer", "listener", "compliance")


class ScriptedTranscriber:
    """Says the given segments on every channel with sound: ``(start_ms, end_ms, text)``."""

    def __init__(self, segments: Sequence[tuple[int, int, str]]) -> None:
        self.segments = list(segments)

    @property
    def fingerprint(self) -> dict[str, Any]:
        return {"model": "scripted", "segments": [list(s) for s in self.segments]}

    def transcribe(self, audio: npt.NDArray[np.float32]) -> list[Segment]:
        if not np.any(np.abs(audio) > 0.01):
            return []
        return [Segment(a, b, text, 0.9) for a, b, text in self.segments]


def tone(ms: int, rate: int = 24000, freq: float = 440.0, level: float = 0.3) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype("<i2").tobytes()


def archive_analyzed(
    store: ObjectStore,
    call_id: str,
    tracks: Mapping[str, bytes],
    segments: Sequence[tuple[int, int, str]],
    work_dir: Path,
    start_ns: int = START_NS,
) -> envelope.RecordingFinished:
    event = archive_call(store, call_id, tracks, work_dir, start_ns=start_ns)
    analyze_recording(store, event, ScriptedTranscriber(segments), AnalysisConfig())
    return event


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)


def users_file(path: Path) -> Path:
    """One user per role, named after it, all with :data:`PASSWORD`."""
    digest = _password_hash()
    path.write_text("".join(f"{role}:{role}:{digest}\n" for role in ROLES))
    return path


def console_settings(archive_uri: str, users: Path, **overrides: Any) -> ConsoleSettings:
    values: dict[str, Any] = {
        "archive_uri": archive_uri,
        "console_users_file": str(users),
        "console_session_secret": "test-secret-" + "x" * 32,
        "console_port": 0,
        "console_host": "127.0.0.1",
        "console_index_refresh_s": 0.5,
    }
    values.update(overrides)
    return ConsoleSettings(**values)


@contextlib.contextmanager
def running_console(settings: ConsoleSettings, store: ObjectStore) -> Iterator[str]:
    """A console serving on 127.0.0.1:<free port>; yields its base URL once it is ready."""
    console = Console(settings, store)
    started = threading.Event()
    stop: list[asyncio.Event] = []
    port: list[int] = []
    errors: list[BaseException] = []

    async def main() -> None:
        server = ConsoleServer(console.app(), settings.console_host, settings.console_port)
        stop.append(asyncio.Event())
        await server.start()
        port.append(server.port)
        started.set()
        await stop[0].wait()
        await server.stop()

    def thread_main() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:
            errors.append(exc)
            started.set()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=thread_main, name="console", daemon=True)
    thread.start()
    started.wait(60)
    if errors:
        raise errors[0]
    url = f"http://127.0.0.1:{port[0]}"
    deadline = 120.0
    import time
    import urllib.request

    end = time.monotonic() + deadline
    while True:  # ready once the index is loaded
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > end:
            raise TimeoutError("the console did not get ready")
        time.sleep(0.05)
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)
        loop.close()
