"""Values from the network, made safe to put in a log line; stream tokens kept out of logs.

:func:`safe` escapes what a sender chose (a ``call_id``, a ``stream_id``) before it goes
into a ``%s`` of a log line: newlines and other control characters become visible
escapes, so a sender cannot forge log lines or hide text with terminal escapes, and
long values are cut, so a sender cannot flood the log (docs/operations.md, "Logs").

:class:`TokenRedactor` is a :class:`logging.Filter` that replaces stream tokens in
request paths (``?token=...``, ``/v1/stream/<token>``) with ``<redacted>`` in every
record it sees; :func:`install_token_redaction` puts it on the handlers of the root
logger, so it covers websockets' DEBUG lines (which log the request path) and ours.
"""

from __future__ import annotations

import logging
import re

MAX_CHARS = 128
"""Longest value logged; a longer one is cut and ends with ``…(+N)``."""

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")
_TOKEN = re.compile(
    r"((?:[?&;]|%3[fF]|%26)token(?:=|%3[dD]))[^&;\s\"'#]*"
    r"|(/v1/stream/)[^?\s\"'#/]+"
)
REDACTED = "<redacted>"


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch == "\\":
        return "\\\\"
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe(value: object, max_chars: int = MAX_CHARS) -> str:
    """``value`` as one printable log field: control characters, line separators and
    backslashes escaped (``\\n`` becomes ``\\x0a``), cut after ``max_chars`` characters."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) - max_chars
    if cut > 0:
        text = text[:max_chars]
    text = _UNSAFE.sub(_escape, text)
    return f"{text}…(+{cut})" if cut > 0 else text


def redact_tokens(text: str) -> str:
    """``text`` with the token of every stream URL or path in it replaced by ``<redacted>``."""
    return _TOKEN.sub(lambda m: (m.group(1) or m.group(2)) + REDACTED, text)


class TokenRedactor(logging.Filter):
    """Rewrites a record's message so that no stream token reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format: let the handler report it as usual
            return True
        redacted = redact_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACTOR = TokenRedactor()
TOKEN_LOGGERS = ("websockets.server", "websockets.client", "ingest.server", "ingest.ws",
                 "callrec")
"""Loggers that see request paths: ingest's (DEBUG: ``GET /v1/stream?token=...``), picows'
under it, websockets' (the simulator's client) and ours. A logger's filters see only the
records logged on it (not its children's): the root handlers' filter covers the rest."""


def install_token_redaction() -> None:
    """Redact stream tokens in every log line: on the root logger's handlers (records of
    every logger end there) and on the loggers that see request paths (for handlers that
    someone attaches to those loggers directly). Idempotent."""
    for handler in logging.getLogger().handlers:
        if _REDACTOR not in handler.filters:
            handler.addFilter(_REDACTOR)
    for name in TOKEN_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)
