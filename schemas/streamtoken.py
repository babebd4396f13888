"""Per-call stream tokens: the token in a ``stream_url`` proves which call it is for.

The control plane starts each Wavix stream with ``stream_url = <ingest>?token=<token>``
where the token is an HMAC-SHA256 of the call id under a secret key::

    ct1.<key id>.<base64url(HMAC-SHA256(key, "callrec-stream-v1\\0" + call_id))>

Ingest accepts the upgrade when the key id is one it knows, then checks the MAC against
the call id of the stream's ``start`` message: a token leaked from one call cannot
record (or inject audio into) another. The key id lets keys rotate: mint with the newest
key, accept every key still listed (docs/control.md, "Stream tokens"). Pure functions;
comparisons in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping

PREFIX = "ct1"
_DOMAIN = b"callrec-stream-v1\0"
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _mac(key: bytes, call_id: str) -> str:
    digest = hmac.new(key, _DOMAIN + call_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mint(call_id: str, key_id: str, key: bytes) -> str:
    """The stream token of ``call_id`` under key ``key_id``."""
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError("key id must be 1-32 characters of [A-Za-z0-9_-]")
    return f"{PREFIX}.{key_id}.{_mac(key, call_id)}"


def key_id_of(token: str) -> str | None:
    """The key id of a per-call token, or None when ``token`` is not one (a static token)."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX or not _KEY_ID.fullmatch(parts[1]):
        return None
    return parts[1]


def verify(token: str, call_id: str, keys: Mapping[str, bytes]) -> bool:
    """True when ``token`` is the token of ``call_id`` under one of ``keys`` (by key id)."""
    key_id = key_id_of(token)
    if key_id is None or key_id not in keys:
        return False
    return hmac.compare_digest(token.encode(), mint(call_id, key_id, keys[key_id]).encode())


def parse_keys(text: str) -> dict[str, bytes]:
    """``"k2:secret2,k1:secret1"`` as ``{key id: key}``, newest first (dicts keep order).

    Raises ``ValueError`` for an entry without ``:``, a bad key id or a key shorter than
    16 bytes.
    """
    keys: dict[str, bytes] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        key_id, sep, secret = entry.partition(":")
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise ValueError("stream token keys are 'keyid:secret' entries, comma-separated")
        if len(secret) < 16:
            raise ValueError(f"stream token key {key_id!r} is shorter than 16 characters")
        keys[key_id] = secret.encode()
    return keys
