"""``callrec up``: ingest, recorder, analyzer, the console (and control) in one process.

The same services as the distributed deployment, wired to the local bus
(``infra.bus.local``) instead of Kafka and to a directory (``LocalStore``)
instead of S3 unless ``CALLREC_ARCHIVE_URI`` names one::

    <data dir>/bus/<topic>/...          the local log (durable, replayed on restart)
    <data dir>/archive/recordings/...   WAV, manifest, transcript
    <data dir>/archive/tables/...       Parquet tables (callrec query reads them)
    <data dir>/spill/...                the recorder's open tracks

The review console (docs/console.md) serves the same archive on its own port
(``CALLREC_CONSOLE_PORT``). Crash recovery is the distributed design's: whatever ingest
acknowledged is in the local log; on restart the recorder replays from its committed offset, and
recordings whose streams were open when the process died are archived as
incomplete from the audio received, with the reason "callrec restarted before
the stream ended".

With ``CALLREC_CONTROL_WEBHOOK_SECRET`` set, the control plane runs too (webhook and
API on ``CALLREC_CONTROL_PORT``, the controller on the local bus; docs/control.md).
Its per-call state lives in the local log of ``callrec.control``, which no group reads,
so it is never truncated.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import IO

from callrec import wiring
from callrec.commands_control import running_control
from callrec.errors import CommandError
from console.server import ConsoleServer
from console.settings import ConsoleSettings
from control.settings import ControlSettings
from infra.bus.local import LocalBus
from infra.store import ObjectStore
from infra.store.local import LocalStore
from ingest.settings import IngestSettings
from workers.analyzer.service import AnalyzerService
from workers.analyzer.settings import AnalyzerSettings
from workers.analyzer.transcribe import WhisperTranscriber
from workers.recorder.settings import RecorderSettings

log = logging.getLogger(__name__)


class UpSettings(IngestSettings, RecorderSettings, AnalyzerSettings, ControlSettings,
                 ConsoleSettings):
    """``callrec up``: ingest, recorder, analyzer, the review console and (with a webhook
    secret) the control plane in one process, on a local bus."""

    up_data_dir: str = "callrec-data"
    """Directory of the local bus, the spill files and (unless CALLREC_ARCHIVE_URI is
    set) the archive: WAV, manifests, transcripts and the Parquet tables."""


class DataDirInUseError(CommandError):
    """Another ``callrec up`` already runs on this data directory."""


class EmbeddedPipeline:
    """The services of one ``callrec up`` process and their shared resources."""

    def __init__(self, settings: UpSettings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.up_data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.data_dir)
        self.bus = LocalBus(self.data_dir / "bus")
        self.store: ObjectStore = (
            settings.open_store() if "CALLREC_ARCHIVE_URI" in os.environ
            else LocalStore(self.data_dir / "archive")
        )
        self.ingest = wiring.ingest_server(settings, self.bus)
        self.recorder = wiring.recorder_service(settings, self.store, self.bus,
                                                spill_dir=self.data_dir / "spill")
        self.control_port: int | None = None
        """Port of the control plane's webhook and API, when it runs."""
        self.analyzer: AnalyzerService | None = None
        """Built in :meth:`run`: loading the whisper model takes a few seconds."""
        self.console = ConsoleServer(
            wiring.console(settings.model_copy(update={"archive_uri": self.archive_uri}),
                           self.store).app(),
            settings.console_host, settings.console_port)

    @property
    def archive_uri(self) -> str:
        return self.store.uri("")

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Serve until ``stop``; then drain ingest, and stop the workers after it."""
        await asyncio.to_thread(self.store.check)
        settings = self.settings
        transcriber = await asyncio.to_thread(WhisperTranscriber, settings.transcriber_config())
        self.analyzer = wiring.analyzer_service(settings, self.store, transcriber, self.bus)
        workers_stop = asyncio.Event()
        tasks = [asyncio.create_task(self.recorder.run(workers_stop)),
                 asyncio.create_task(self.analyzer.run(workers_stop))]
        try:
            await self.ingest.start()
            await self.console.start()
            async with contextlib.AsyncExitStack() as control:
                if settings.control_webhook_secret is not None:
                    _, self.control_port, _ = await control.enter_async_context(
                        running_control(settings.model_copy(update={"control_role": "all"}),
                                        store=self.store, bus=self.bus))
                    log.info("control plane on port %s", self.control_port)
                if ready is not None:
                    ready.set()
                # Until asked to stop, or until a worker ends (it failed: stop everything).
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
            await self.ingest.drain()
        finally:
            await self.console.stop()
            workers_stop.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self.bus.close()
            self._lock.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result


def _lock(data_dir: Path) -> IO[str]:
    handle = (data_dir / ".lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataDirInUseError(f"another callrec up uses {data_dir}") from None
    return handle
