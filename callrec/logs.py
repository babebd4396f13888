"""Logging set-up for the entry points (``callrec <service>``, ``callrec simulate``).

Only entry points configure logging; library code just calls
``logging.getLogger(__name__)``. Kept apart from :mod:`callrec.cli` so that
tools registered there (the simulator) can use it without importing the CLI.
"""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiokafka logs every failed reconnect at ERROR; our own lines say what matters.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # picows (ingest's WebSocket server) logs every connection and disconnection at INFO.
    logging.getLogger("ingest.ws").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    from infra.logsafe import install_token_redaction

    install_token_redaction()  # stream URLs carry tokens; no log line may show one
