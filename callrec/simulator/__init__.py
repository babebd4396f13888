"""``callrec simulate``: act as Wavix's media gateway and stream audio files as calls.

Each simulated call opens its WebSocket connection(s) to the ingest URL, all of
them before any message, then sends on each exactly what Wavix sends:
``connected``, ``start``, one ``media`` per 20 ms frame and ``stop``, then closes
normally. Two layouts, as a Wavix customer may configure them:

- ``both``: one connection with ``stream_channel`` both; frame *n* of the
  inbound track then frame *n* of the outbound track, ``media.track`` saying which.
- ``oneway``: one connection per track (``channel`` inbound / outbound), each
  with its own ``stream_id``.

Numbering, per connection: ``start`` has ``sequence_number`` 1 and every later
message the next number in the gateway's order; ``chunk`` counts from 1 per
track; ``timestamp`` is ``(chunk - 1) * 20`` ms. A frame is sent when it is
complete, 20 ms after it began (``realtime``), or as fast as the socket takes it.
``event_time`` follows the audio timeline from one start time per call, so every
stream of a call carries the same ``start`` time, as at the gateway.

Faults (:class:`Faults`) model a bad network or a buggy sender. They are drawn
from a ``random.Random`` seeded with the seed, the call id and the stream's
index, so a run is reproducible whatever the concurrency. A dropped chunk keeps
its sequence number (the receiver sees the gap), a duplicate repeats it, a
reordered pair keeps both; malformed messages are extra, numbered by nothing.

Modules, one noun each::

    calls      SimulatedCall, build_calls: the audio of each track, from a file
    faults     Faults: what to break, and the seeded draws
    plan       the connections of a call and the steps each sends (no I/O)
    messages   the steps rendered as Wavix JSON text frames (no I/O)
    stream     stream_call: the WebSocket connections of one call
    run        run_calls: many calls, so many at a time
    reports    StreamReport, CallReport and the totals of a run
    errors     the SimulatorError tree
    cli        ``callrec simulate``: flags, progress and summary on the terminal
"""

from callrec.simulator.calls import TRACKS, Layout, SimulatedCall, build_calls
from callrec.simulator.cli import DEFAULT_URL, TOKEN_ENV, register
from callrec.simulator.errors import CallsFailed, ConnectFailed, SimulatorError, StreamRejected
from callrec.simulator.faults import MALFORMED_KINDS, Faults, MalformedKind
from callrec.simulator.messages import FRAME_MS, iso_time
from callrec.simulator.plan import connection_steps
from callrec.simulator.reports import CallReport, StreamReport, summarize
from callrec.simulator.run import run_calls
from callrec.simulator.stream import CLOSE_TIMEOUT_S, stream_call, with_token

__all__ = [
    "CLOSE_TIMEOUT_S",
    "DEFAULT_URL",
    "FRAME_MS",
    "MALFORMED_KINDS",
    "TOKEN_ENV",
    "TRACKS",
    "CallReport",
    "CallsFailed",
    "ConnectFailed",
    "Faults",
    "Layout",
    "MalformedKind",
    "SimulatedCall",
    "SimulatorError",
    "StreamRejected",
    "StreamReport",
    "build_calls",
    "connection_steps",
    "iso_time",
    "register",
    "run_calls",
    "stream_call",
    "summarize",
    "with_token",
]
