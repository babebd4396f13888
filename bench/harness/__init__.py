"""The harness every benchmark shares (see bench/README.md).

Modules::

    wire.py       a lean WebSocket client on websockets' sans-I/O protocol
    procs.py      child processes: started, read line by line, always stopped
    procfs.py     CPU and memory of processes and of the machine, from /proc
    promstats.py  Prometheus text: samples, histograms, PromQL-style quantiles
    sampler.py    a thread sampling the processes and /metrics of a run
    topics.py     Kafka topics made and removed for a run
    report.py     the machine, text and Markdown tables, sections of docs/*.md
"""
