"""The recorder's errors, one root, and what becomes of each.

::

    RecorderError                 none retriable: the same records fail the same way
    ├── ArchiveConflictError      a manifest at this call's key names another call
    └── ReassemblyError           the reassembly core (workers.recorder.spool, .reassembly)
        ├── WrongCallError        a record of another call was given to an assembler
        ├── FinalizedError        a chunk was added after finish()/finalize()
        └── SpoolCorruptError     a spool file ends inside a record (local disk trouble)

Errors of the shared base (``infra.errors``: ``StoreError``, ``WavError``,
``BusError``) and ``OSError`` reach the service loop, which retries what is
retriable and records the rest as a failed recording.
"""

from __future__ import annotations


class RecorderError(Exception):
    """Root of the recorder's own errors."""

    retriable = False


class ArchiveConflictError(RecorderError):
    """The archive holds, at one of this call's keys, a manifest of another call."""


class ReassemblyError(RecorderError):
    """Root of the reassembly core's errors."""


class WrongCallError(ReassemblyError):
    """A record of another call was given to an assembler (a bug in the caller)."""


class FinalizedError(ReassemblyError):
    """A record was added after the spool or recording was finished (a bug in the caller)."""


class SpoolCorruptError(ReassemblyError):
    """A local spool file is shorter than its records say: the disk lost data."""
