"""The root of the command-line tools' own errors, and its tree.

::

    CommandError
    ├── QueryError           callrec query: the SQL failed or the archive cannot be opened
    ├── DataDirInUseError    callrec up: another process runs on the data directory
    └── SimulatorError       callrec simulate (tree in callrec/simulator/errors.py)

A command prints one of these as one line and exits non-zero; errors of the
services and the base (``IngestError``, ``RecorderError``, ``AnalyzerError``,
``InfraError``) keep their own roots.
"""

from __future__ import annotations


class CommandError(Exception):
    """Root of the errors a ``callrec`` command reports to its user."""
