"""Wavix call events: the lenient parser (id or uuid, strings or numbers, unknown types)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import callevents
from schemas.callevents import EVENT_TYPES, CallEvent
from schemas.errors import CallEventError, InvalidCallEventError, MalformedCallEventError


def parse(obj: object) -> CallEvent:
    return callevents.parse(json.dumps(obj).encode())


def test_an_on_call_event_with_every_field() -> None:
    event = parse(
        {
            "id": "c-1",
            "event_type": "answered",
            "event_time": "2025-11-21T08:00:00Z",
            "from": "+442079460001",
            "to": "+15550100",
            "direction": "Inbound",
            "tag": "sales",
            "call_started": "2025-11-21T07:59:50Z",
            "call_answered": "2025-11-21T08:00:00Z",
            "machine_detected": False,
            "event_payload": {"type": "audio", "payload": "x"},
        }
    )
    assert event == CallEvent(
        call_id="c-1",
        event_type="answered",
        event_time="2025-11-21T08:00:00Z",
        from_number="+442079460001",
        to_number="+15550100",
        direction="inbound",
        tag="sales",
        call_started="2025-11-21T07:59:50Z",
        call_answered="2025-11-21T08:00:00Z",
    )


@pytest.mark.parametrize(
    "body",
    [
        {"uuid": "c-1", "event_type": "completed"},
        {"call_id": "c-1", "event_type": "completed"},
        {"call": {"id": "c-1"}, "event_type": "completed"},
        {"id": "c-1", "event": "completed"},
    ],
)
def test_the_call_id_under_any_of_its_names(body: dict[str, object]) -> None:
    event = parse(body)
    assert (event.call_id, event.event_type, event.final) == ("c-1", "completed", True)


def test_numbers_become_strings() -> None:
    event = parse({"uuid": 123456, "event_type": "ringing", "from": 442079460001, "to": 1.0})
    assert (event.call_id, event.from_number, event.to_number) == ("123456", "442079460001", "1")


def test_a_post_call_summary_has_no_event_type() -> None:
    event = parse(
        {
            "uuid": "c-1",
            "direction": "outbound",
            "from": "+1",
            "destination": "+44",
            "duration": "61",
            "disposition": "ANSWERED",
            "charge": 0.1,
        }
    )
    assert (event.event_type, event.to_number, event.duration_s, event.disposition) == (
        "post_call",
        "+44",
        61,
        "answered",
    )


def test_every_wavix_event_type_is_known_and_others_are_not() -> None:
    for name in EVENT_TYPES:
        assert parse({"id": "c", "event_type": name}).known
    unknown = parse({"id": "c", "event_type": "Teleported"})
    assert (unknown.known, unknown.event_type) == (False, "teleported")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", MalformedCallEventError),
        (b"[1, 2]", MalformedCallEventError),
        (b'{"event_type": "answered"}', InvalidCallEventError),
        (b'{"id": "c"}', InvalidCallEventError),
        (b'{"id": "' + b"x" * 200 + b'", "event_type": "answered"}', InvalidCallEventError),
    ],
)
def test_what_is_not_a_call_event(body: bytes, error: type[CallEventError]) -> None:
    with pytest.raises(error):
        callevents.parse(body)


def test_the_emulator_encoding_round_trips() -> None:
    event = CallEvent(
        call_id="c",
        event_type="answered",
        from_number="+1",
        to_number="+2",
        direction="inbound",
        tag="t",
        call_answered="2025-01-01T00:00:00Z",
    )
    assert callevents.parse(callevents.encode(event)) == event


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_a_call_event_error(data: bytes) -> None:
    with contextlib.suppress(CallEventError):
        callevents.parse(data)
