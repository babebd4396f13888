"""The Wavix protocol module: every seed message, leniency, and nothing but ProtocolError."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import wavix
from schemas.codecs import PCMU_8K
from schemas.errors import (
    InvalidBase64Error,
    InvalidMessageError,
    InvalidPayloadError,
    MalformedJSONError,
    ProtocolError,
    UnknownEventError,
)

FRAME = bytes(range(256)) * 3 + bytes(192)  # 960 bytes: 20 ms of L16/24000


def media_json(**overrides: object) -> bytes:
    msg: dict[str, object] = {
        "event": "media",
        "event_time": "2025-11-21T08:00:00.020Z",
        "call_id": "call-1",
        "stream_id": "stream-a",
        "sequence_number": "3",
        "media": {
            "payload": base64.b64encode(FRAME).decode(),
            "track": "inbound",
            "timestamp": "20",
            "chunk": "2",
        },
    }
    msg.update(overrides)
    return json.dumps(msg).encode()


def test_seed_connected() -> None:
    event = wavix.parse(b'{"event": "connected", "event_time": "2025-11-21T08:00:00Z"}')
    assert event == wavix.Connected(event_time="2025-11-21T08:00:00Z")


def test_seed_start_with_string_numbers() -> None:
    event = wavix.parse(
        json.dumps({
            "event": "start", "event_time": "2025-11-21T08:00:00Z", "call_id": "call-1",
            "stream_id": "stream-a", "stream_type": "twoway", "channel": "inbound",
            "sequence_number": "1",
        })
    )
    assert isinstance(event, wavix.Start)
    assert (event.call_id, event.stream_type, event.channel, event.sequence_number) == (
        "call-1", "twoway", "inbound", 1
    )


def test_seed_media_strings_and_integers_decode_alike() -> None:
    as_strings = wavix.parse(media_json())
    as_ints = wavix.parse(
        media_json(sequence_number=3, media={
            "payload": base64.b64encode(FRAME).decode(), "track": "inbound",
            "timestamp": 20, "chunk": 2,
        })
    )
    assert as_strings == as_ints
    assert isinstance(as_strings, wavix.Media)
    assert as_strings.media.payload == FRAME
    assert (as_strings.media.chunk, as_strings.media.timestamp) == (2, 20)


def test_seed_stop_and_mark() -> None:
    stop = wavix.parse(b'{"event":"stop","call_id":"c","stream_id":"s","sequence_number":"9"}')
    assert stop == wavix.Stop(call_id="c", stream_id="s", sequence_number=9)
    mark = wavix.parse(
        b'{"event":"mark","event_time":"2025-10-15T14:32:10Z","call_id":"abc123",'
        b'"stream_id":"stream456","sequence_number":"42","mark":{"name":"response_complete"}}'
    )
    assert isinstance(mark, wavix.Mark)
    assert (mark.mark.name, mark.sequence_number) == ("response_complete", 42)


def test_unknown_fields_are_ignored() -> None:
    event = wavix.parse(media_json(account="x", extra={"nested": [1, 2]}))
    assert isinstance(event, wavix.Media)


def test_track_may_be_absent() -> None:
    event = wavix.parse(media_json(media={
        "payload": base64.b64encode(FRAME).decode(), "timestamp": 0, "chunk": 1,
    }))
    assert isinstance(event, wavix.Media) and event.media.track is None


@pytest.mark.parametrize(
    ("data", "error", "reason"),
    [
        (b"{not json", MalformedJSONError, "malformed_json"),
        (b"\xff\xfe\x00", MalformedJSONError, "malformed_json"),
        (b'{"event": "dance"}', UnknownEventError, "unknown_event"),
        (b'{"event": "stop"}', InvalidMessageError, "invalid_message"),
        (b"[1, 2]", InvalidMessageError, "invalid_message"),
        (media_json(call_id=""), InvalidMessageError, "invalid_message"),
        (media_json(call_id="x" * 129), InvalidMessageError, "invalid_message"),
        (media_json(media={"payload": "%%%", "track": "inbound", "timestamp": 0, "chunk": 1}),
         InvalidBase64Error, "bad_base64"),
        (media_json(media={"payload": "AAAA", "track": "inbound", "timestamp": 0, "chunk": 1}),
         InvalidPayloadError, "bad_payload"),  # 3 bytes: not whole 16-bit samples
        (media_json(media={"payload": "", "track": "inbound", "timestamp": 0, "chunk": 1}),
         InvalidPayloadError, "bad_payload"),
        (media_json(media={"payload": "AAAA", "track": "sideways", "timestamp": 0, "chunk": 1}),
         InvalidMessageError, "invalid_message"),
        (media_json(media={"payload": "AAAA", "track": "inbound", "timestamp": -5, "chunk": 1}),
         InvalidMessageError, "invalid_message"),
        (media_json(media={"payload": "AAAA", "track": "inbound", "timestamp": "x", "chunk": 1}),
         InvalidMessageError, "invalid_message"),
    ],
)
def test_bad_messages_raise_a_named_protocol_error(
    data: bytes, error: type[ProtocolError], reason: str
) -> None:
    with pytest.raises(error) as info:
        wavix.parse(data)
    assert info.value.reason == reason


def test_odd_length_is_whole_samples_for_one_byte_codecs() -> None:
    data = media_json(media={"payload": "AAAA", "track": "inbound", "timestamp": 0, "chunk": 1})
    with pytest.raises(InvalidPayloadError):
        wavix.parse(data)
    event = wavix.parse(data, PCMU_8K)
    assert isinstance(event, wavix.Media) and len(event.media.payload) == 3


@pytest.mark.parametrize("as_strings", [False, True])
def test_encode_round_trips(as_strings: bool) -> None:
    event = wavix.Media(
        call_id="c", stream_id="s", sequence_number=4, event_time="2025-11-21T08:00:00Z",
        media=wavix.MediaBody(payload=FRAME, chunk=3, timestamp=40, track="outbound"),
    )
    data = wavix.encode(event, numbers_as_strings=as_strings)
    assert wavix.parse(data) == event
    body = json.loads(data)["media"]
    assert isinstance(body["chunk"], str) is as_strings
    assert isinstance(body["timestamp"], str) is as_strings


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
wavix_like = st.fixed_dictionaries(
    {"event": st.sampled_from([*wavix.EVENT_NAMES, "clear", ""])},
    optional={
        "call_id": json_values, "stream_id": json_values, "sequence_number": json_values,
        "media": st.fixed_dictionaries({}, optional={
            "payload": st.text() | st.binary().map(lambda b: base64.b64encode(b).decode()),
            "track": json_values, "timestamp": json_values, "chunk": json_values,
        }),
        "mark": json_values, "channel": json_values, "stream_type": json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes | str) -> None:
    with contextlib.suppress(ProtocolError):
        wavix.parse(data)


@settings(max_examples=400, deadline=None)
@given(wavix_like)
def test_wavix_shaped_json_raises_only_protocol_error(message: dict[str, object]) -> None:
    try:
        event = wavix.parse(json.dumps(message))
    except ProtocolError:
        return
    assert isinstance(event, (wavix.Connected, wavix.Start, wavix.Media, wavix.Stop, wavix.Mark))
