"""End-to-end load and fault harness: Wavix calls → ingest → Kafka → recorder → MinIO.

Everything is a real process on 127.0.0.1, as in production:

- Kafka and MinIO from ``deploy.local.stack`` (own temp dirs, stopped in ``finally``);
- ``callrec ingest`` and ``callrec recorder`` subprocesses configured by ``CALLREC_*``;
- load generators (:mod:`bench.loadharness.loadgen`), each a process sending its
  slice of the calls in real time, and optionally a hostile-client process
  (:mod:`bench.loadharness.hostile`).

Modules::

    calls.py      the audio of call n (deterministic, so the verifier can rebuild it)
    wire.py       a lean WebSocket client on websockets' sans-I/O protocol
    loadgen.py    load process: N real-time two-track calls, JSON reports
    hostile.py    hostile-client process: bad tokens, oversize frames, floods, idlers...
    cluster.py    service processes, /proc and /metrics sampling, histogram quantiles
    verify.py     every recording in MinIO against what was sent, sample by sample
    run.py        one run: set up, load, inject faults on a timeline, measure, verify

``bench/reliability.py`` drives the fault matrix and the scale curve; the fast
subset runs in ``tests/integration/test_reliability.py``.
"""
