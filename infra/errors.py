"""The root of every error the shared base raises, and its tree.

::

    InfraError                          retriable = False unless said otherwise
    ├── StoreError (infra.store)        reading or writing the archive
    │   ├── StoreUnavailable            retriable: network error, timeout, 5xx, throttling
    │   ├── BucketMissingError          the bucket does not exist (start-up check)
    │   ├── StoreAccessError            credentials refused for the bucket
    │   └── ObjectLockNotEnabledError   retention asked for, bucket without Object Lock
    ├── BusError (infra.bus)            the message bus
    │   ├── BusUnavailable              retriable: a record not taken within the timeout
    │   └── LocalLogError               the local log is unreadable or in use
    ├── WavError (infra.wav)            WAV files
    │   ├── WavTooLargeError            the data does not fit a RIFF file (4 GiB)
    │   ├── TrackFileError              a track file is shorter than its stated length
    │   └── WavFormatError              a WAV read back is not what its codec says
    ├── AudioFileError (infra.audio)    an audio file that cannot be decoded
    └── RowError (infra.parquet)        rows that do not match their table's schema

Each service has a root of its own (``IngestError``, ``RecorderError``,
``AnalyzerError``) and maps these onto its outcomes: a retry, a close code,
a failed recording.
"""

from __future__ import annotations


class InfraError(Exception):
    """Root of the shared base's errors."""

    retriable = False
