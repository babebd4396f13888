"""``callrec analyzer``: transcripts and call metrics for archived recordings.

- ``transcribe``  faster-whisper behind the ``Transcriber`` protocol
- ``callmetrics`` talk detection and conversation/level figures (pure numpy)
- ``analysis``    ``analyze_recording``: the backend-independent core
- ``backfill``    analyse what is already in the archive (resumable)
- ``service``     the Kafka consumer-group loop on ``callrec.recordings``
- ``metrics``     Prometheus metrics
"""
