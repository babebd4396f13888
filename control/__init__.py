"""``callrec control``: Wavix call events in, recording decisions and stream starts out.

docs/control.md describes the service; its parts:

- ``api``: the HTTP service (Starlette): the webhook Wavix posts call events to, the
  pause/resume API, probes and metrics. Stateless: every accepted event goes to Kafka.
- ``controller``: a consumer group over the call events that applies the recording
  ``rules`` and starts, stops and restarts Wavix streams through ``wavixapi``, keeping
  its per-call state in a compacted topic (``state``) and a row per call (``table``).
"""
