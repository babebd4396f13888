"""The parts of the ingest benchmark; its command is bench/ingest_bench.py.

Modules::

    frames.py     Wavix messages framed once, the stream of one simulated call
    loadgen.py    the load generator process: flood, paced, hold
    drain.py      the bare websockets drain server (the baseline)
    servers.py    ``callrec ingest`` on a fresh topic; starting a load generator
    topicscan.py  reading back what ingest wrote to Kafka
    plan.py       full and quick sizes, the targets
    stages.py     the four stages
    report.py     the summary table, details and the "## Ingest" section
"""
