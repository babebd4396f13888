"""End-to-end load and fault harness: Wavix calls → ingest → Kafka → recorder → MinIO.

Everything is a real process on 127.0.0.1, as in production:

- Kafka and MinIO from ``deploy.local.stack`` (own temp dirs, stopped in ``finally``);
- ``callrec ingest`` and ``callrec recorder`` subprocesses configured by ``CALLREC_*``;
- load generators (:mod:`bench.loadharness.loadgen`), each a process sending its
  slice of the calls in real time, and optionally a hostile-client process
  (:mod:`bench.loadharness.hostile`).

Modules (on the shared harness of bench/harness/: WebSocket client, processes,
/proc and /metrics sampling)::

    calls.py      the audio of call n (deterministic, so the verifier can rebuild it)
    loadgen.py    load process: N real-time two-track calls, JSON reports
    hostile.py    hostile-client process: bad tokens, oversize frames, floods, idlers...
    loadproc.py   a load or hostile process seen from the run: status lines, result
    verify.py     every recording in MinIO against what was sent, sample by sample
    run.py        one run: set up, load, inject faults on a timeline, measure, verify
    figures.py    the run's service counters and log lines, summed up
    scenarios.py  the fault matrix: one fault each, and the promise it must keep
    tables.py     results as table rows: scale curve, fault matrix, hostile clients

``bench/reliability.py`` drives the fault matrix and the scale curve; the fast
subset runs in ``tests/integration/test_reliability.py``.
"""
