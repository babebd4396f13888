"""Errors of ``callrec simulate``::

    SimulatorError
    ├── StreamRejected   the server refused the WebSocket upgrade (``status``: 401, 503)
    ├── ConnectFailed    no WebSocket connection at all (refused, timeout, bad handshake)
    └── CallsFailed      run_calls: some calls failed; ``errors`` and the others' ``reports``

A close code sent by the server while streaming (1008, 1009, 1013, ...) is not
an error: it is recorded in :class:`~callrec.simulator.reports.StreamReport`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from callrec.errors import CommandError

if TYPE_CHECKING:
    from callrec.simulator.reports import CallReport


class SimulatorError(CommandError):
    """Root of the errors of ``callrec simulate``."""


class StreamRejected(SimulatorError):
    """The server answered the WebSocket upgrade with an HTTP error."""

    def __init__(self, status: int, body: str = "") -> None:
        self.status = status
        """HTTP status, e.g. 401 (bad token) or 503 (not ready)."""
        self.body = body
        """The response body, trimmed: the server's reason in words."""
        detail = f": {body}" if body else ""
        super().__init__(f"server rejected the stream with HTTP {status}{detail}")


class ConnectFailed(SimulatorError):
    """No WebSocket connection: nothing listens, a timeout, or not a WebSocket server."""


class CallsFailed(SimulatorError):
    """Some calls of :func:`run_calls` could not be streamed; the others finished."""

    def __init__(self, errors: Mapping[str, SimulatorError], reports: list[CallReport]) -> None:
        self.errors = dict(errors)
        """call_id -> why that call could not be streamed."""
        self.reports = reports
        """Reports of the calls that were streamed."""
        kinds = Counter(str(e) for e in self.errors.values())
        listed = "; ".join(f"{msg} (x{n})" for msg, n in kinds.most_common())
        super().__init__(f"{len(self.errors)} calls failed: {listed}")

    @property
    def statuses(self) -> set[int]:
        """The HTTP statuses of the rejected calls."""
        return {e.status for e in self.errors.values() if isinstance(e, StreamRejected)}
