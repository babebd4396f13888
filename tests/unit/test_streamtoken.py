"""Per-call stream tokens: bound to the call id, rotatable by key id."""

from __future__ import annotations

import pytest

from schemas import streamtoken

KEYS = streamtoken.parse_keys("k2:new-secret-0123456789,k1:old-secret-0123456789")


def test_a_token_fits_its_call_only() -> None:
    token = streamtoken.mint("call-1", "k2", KEYS["k2"])
    assert token.startswith("ct1.k2.")
    assert streamtoken.verify(token, "call-1", KEYS)
    assert not streamtoken.verify(token, "call-2", KEYS)


def test_rotation_accepts_every_listed_key_and_no_other() -> None:
    old = streamtoken.mint("call-1", "k1", KEYS["k1"])
    assert streamtoken.verify(old, "call-1", KEYS)
    assert not streamtoken.verify(old, "call-1", {"k2": KEYS["k2"]})
    forged = streamtoken.mint("call-1", "k1", b"guessed-secret-000000")
    assert not streamtoken.verify(forged, "call-1", KEYS)


def test_static_tokens_are_not_call_tokens() -> None:
    assert streamtoken.key_id_of("a-static-token") is None
    assert streamtoken.key_id_of("ct1.k1.abc") == "k1"
    assert not streamtoken.verify("a-static-token", "call-1", KEYS)


@pytest.mark.parametrize("text", ["nocolon", "bad id:0123456789abcdef", "k:short"])
def test_bad_key_lists_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        streamtoken.parse_keys(text)
