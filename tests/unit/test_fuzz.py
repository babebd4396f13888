"""Fuzzing the two parsers that take bytes from outside, and the corpus of bad inputs.

- ``schemas.wavix.parse`` (what any client on the internet sends) and
  ``schemas.envelope.decode`` (what any producer on the topic wrote) must turn
  every input into a value or their one error family (ProtocolError /
  EnvelopeError), never crash another way; what they accept must survive a
  round trip.
- ``ingest.session.StreamSession`` fed random message sequences raises only
  ProtocolError / SkippedMessage, and the records it returns obey its rules.
- ``tests/data/fuzz/``: bad inputs, one per file, replayed with the exact
  outcome each must get (``index.json`` says which and why). Findings of fuzzing
  go there. ``bench/fuzz_atheris.py`` runs the same targets under atheris
  (coverage-guided), seeded with this corpus, when atheris is installed.

Deeper than tests/unit/test_wavix.py and test_envelope.py: inputs are mutations
of valid messages (bytes and structure), not only random bytes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingest.errors import SkippedMessage
from ingest.server import IngestServer
from ingest.session import StreamSession
from schemas import envelope, wavix
from schemas.codecs import CODECS, L16_24K, Codec
from schemas.errors import EnvelopeError, ProtocolError

CORPUS = Path(__file__).parent.parent / "data" / "fuzz"
INDEX = json.loads((CORPUS / "index.json").read_text())
FRAME = bytes(range(256)) * 3 + bytes(192)

# -- valid inputs to mutate -------------------------------------------------------------------

ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
              max_size=20)
counts = st.integers(min_value=0, max_value=2**53)
tracks = st.sampled_from(["inbound", "outbound"])
payloads = st.binary(min_size=2, max_size=1200).filter(lambda b: len(b) % 2 == 0)

wavix_events = st.one_of(
    st.builds(wavix.Connected, event_time=st.none() | st.text(max_size=30)),
    st.builds(wavix.Start, call_id=ids, stream_id=ids,
              stream_type=st.sampled_from(["oneway", "twoway"]),
              channel=st.sampled_from(["inbound", "outbound", "both"]),
              sequence_number=st.none() | counts, event_time=st.none() | st.text(max_size=30)),
    st.builds(wavix.Media, call_id=ids, stream_id=ids,
              media=st.builds(wavix.MediaBody, payload=payloads, chunk=counts,
                              timestamp=counts, track=st.none() | tracks),
              sequence_number=st.none() | counts),
    st.builds(wavix.Stop, call_id=ids, stream_id=ids, sequence_number=st.none() | counts),
    st.builds(wavix.Mark, call_id=ids, stream_id=ids,
              mark=st.builds(wavix.MarkBody, name=st.text(max_size=40))),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


def _valid_messages() -> list[bytes]:
    media = wavix.Media(call_id="c1", stream_id="s1", sequence_number=2,
                        event_time="2026-01-01T00:00:00.020Z",
                        media=wavix.MediaBody(payload=FRAME, chunk=1, timestamp=0,
                                              track="inbound"))
    events: list[wavix.Event] = [
        wavix.Connected(event_time="2026-01-01T00:00:00Z"),
        wavix.Start(call_id="c1", stream_id="s1", channel="both", sequence_number=1),
        media,
        wavix.Stop(call_id="c1", stream_id="s1", sequence_number=3),
        wavix.Mark(call_id="c1", stream_id="s1", mark=wavix.MarkBody(name="done")),
    ]
    return [wavix.encode(e, numbers_as_strings=s) for e in events for s in (False, True)]


VALID_MESSAGES = _valid_messages()


def check_parse(data: bytes | str, codec: Codec = L16_24K) -> wavix.Event | None:
    """Parse; only ProtocolError may escape, and what parses must round-trip."""
    try:
        event = wavix.parse(data, codec)
    except ProtocolError as exc:
        assert exc.reason in {"malformed_json", "unknown_event", "invalid_message",
                              "bad_payload", "bad_base64"}
        return None
    if isinstance(event, wavix.Media):
        size = len(event.media.payload)
        assert size > 0 and size % codec.sample_width == 0
    assert wavix.parse(wavix.encode(event), codec) == event
    assert wavix.parse(wavix.encode(event, numbers_as_strings=True), codec) == event
    return event


# -- byte mutations ---------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid message with a few byte-level edits: flips, inserts, deletes, splices."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup",
                                   "splice"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from(b'{}[]":,\\0123456789-.eE \x00\xff"tfn'))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup":
            end = pos + draw(st.integers(1, 32))
            data[pos:pos] = data[pos:end]
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            cut = draw(st.integers(0, len(other)))
            data[pos:] = other[cut:]
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(VALID_MESSAGES), st.sampled_from(sorted(CODECS)))
def test_byte_mutations_of_valid_messages_raise_only_protocol_error(data: bytes,
                                                                     codec: str) -> None:
    check_parse(data, CODECS[codec])
    check_parse(data.decode("utf-8", "replace"), CODECS[codec])


# -- structural mutations -----------------------------------------------------------------------


@st.composite
def mutated_json(draw: st.DrawFn) -> dict[str, Any]:
    """A valid message as a dict with fields removed, replaced, added or retyped."""
    message: dict[str, Any] = json.loads(draw(st.sampled_from(VALID_MESSAGES)))
    for _ in range(draw(st.integers(1, 4))):
        target = message
        if "media" in message and isinstance(message["media"], dict) and draw(st.booleans()):
            target = message["media"]
        keys = sorted(target)
        op = draw(st.sampled_from(["drop", "replace", "add", "stringify", "numberify",
                                   "huge", "negative"]))
        key = draw(st.sampled_from(keys)) if keys else "event"
        if op == "drop":
            target.pop(key, None)
        elif op == "replace":
            target[key] = draw(json_values)
        elif op == "add":
            target[draw(st.text(max_size=10))] = draw(json_values)
        elif op == "stringify":
            target[key] = str(target.get(key))
        elif op == "numberify":
            target[key] = draw(st.integers() | st.floats(allow_nan=False))
        elif op == "huge":
            target[key] = draw(st.sampled_from([2**53, 2**53 + 1, 2**64, 10**30, "9" * 40,
                                                "x" * 5000]))
        elif op == "negative":
            target[key] = draw(st.sampled_from([-1, "-1", -(2**63)]))
    return message


@settings(max_examples=1500, deadline=None)
@given(mutated_json())
@example({"event": "media", "call_id": "c", "stream_id": "s",
          "media": {"payload": "AAA=", "chunk": 1, "timestamp": 0}})
def test_structural_mutations_raise_only_protocol_error(message: dict[str, Any]) -> None:
    event = check_parse(json.dumps(message))
    if event is not None and not isinstance(event, wavix.Connected):
        assert 1 <= len(event.call_id) <= 128 and 1 <= len(event.stream_id) <= 128


@settings(max_examples=500, deadline=None)
@given(wavix_events, st.booleans())
def test_every_valid_event_round_trips(event: wavix.Event, as_strings: bool) -> None:
    assert wavix.parse(wavix.encode(event, numbers_as_strings=as_strings)) == event


# -- envelope -----------------------------------------------------------------------------------

records = st.one_of(
    st.builds(envelope.MediaChunk, call_id=ids, stream_id=ids, track=tracks, chunk=counts,
              timestamp_ms=counts, codec=st.sampled_from(sorted(CODECS)),
              payload=st.binary(max_size=64), received_ns=counts, seq=st.none() | counts),
    st.builds(envelope.StreamStarted, call_id=ids, stream_id=ids,
              stream_type=st.sampled_from(["oneway", "twoway"]),
              channel=st.sampled_from(["inbound", "outbound", "both"]),
              codec=st.sampled_from(sorted(CODECS)), ingest_pod=ids, connection_id=ids,
              received_ns=counts, event_time=st.none() | st.text(max_size=30),
              seq=st.none() | counts),
    st.builds(envelope.StreamClosed, call_id=ids, stream_id=ids,
              reason=st.sampled_from(["stop", "disconnect", "error"]),
              detail=st.text(max_size=40), ingest_pod=ids, connection_id=ids,
              received_ns=counts, chunks=counts, invalid=counts),
    st.builds(envelope.MarkReceived, call_id=ids, stream_id=ids, name=st.text(max_size=20),
              received_ns=counts, seq=st.none() | counts),
    st.builds(envelope.RecordingFinished, call_id=ids, part=st.integers(0, 1000),
              recording_id=ids, wav_uri=st.text(max_size=40), manifest_uri=st.text(max_size=40),
              tracks=st.lists(tracks, max_size=2), codec=st.sampled_from(sorted(CODECS)),
              start_ns=counts, duration_ms=counts, complete=st.booleans(),
              reason=st.text(max_size=40), wav_sha256=st.text(max_size=64)),
    st.builds(envelope.MediaBatch, call_id=ids, stream_id=ids,
              codec=st.sampled_from(sorted(CODECS)),
              frames=st.lists(st.builds(envelope.MediaFrame, track=tracks, chunk=counts,
                                        timestamp_ms=counts, payload=st.binary(max_size=64),
                                        received_ns=counts, seq=st.none() | counts),
                              min_size=1, max_size=4)),
)


def check_decode(value: bytes) -> envelope.Record | None:
    """Decode; only EnvelopeError may escape, and what decodes must round-trip."""
    try:
        record = envelope.decode(value)
    except EnvelopeError as exc:
        assert exc.reason in {"bad_envelope", "unsupported_version"}
        return None
    assert value[:3] == b"CR\x01"
    assert envelope.decode(envelope.encode(record)) == record
    return record


@settings(max_examples=500, deadline=None)
@given(records)
def test_every_record_round_trips(record: envelope.Record) -> None:
    data = envelope.encode(record)
    assert data[:3] == b"CR\x01"
    assert envelope.decode(data) == record


@settings(max_examples=1500, deadline=None)
@given(records, st.data())
def test_byte_mutations_of_records_raise_only_envelope_error(record: envelope.Record,
                                                             data: st.DataObject) -> None:
    value = data.draw(mutated([envelope.encode(record)]))
    check_decode(value)


@settings(max_examples=1500, deadline=None)
@given(records, st.data())
def test_structural_mutations_of_records_raise_only_envelope_error(
    record: envelope.Record, data: st.DataObject
) -> None:
    encoded = envelope.encode(record)
    fields: dict[str, Any] = msgspec.msgpack.decode(encoded[4:])
    msgpack_values = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False) | st.text(max_size=10) | st.binary(max_size=10),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=6,
    )
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["drop", "replace", "add"]))
        key = data.draw(st.sampled_from(sorted(fields)))
        if op == "drop":
            fields.pop(key, None)
        elif op == "replace":
            fields[key] = data.draw(msgpack_values)
        else:
            fields[data.draw(st.text(max_size=8))] = data.draw(msgpack_values)
    kind = data.draw(st.sampled_from([encoded[3], *range(0, 8)]))
    version = data.draw(st.sampled_from([1, 1, 1, 0, 2, 255]))
    value = b"CR" + bytes((version, kind)) + msgspec.msgpack.encode(fields)
    decoded = check_decode(value)
    if decoded is not None:
        assert type(decoded) is type(record) or kind != encoded[3]


# -- the ingest session -------------------------------------------------------------------------


def _session_pool() -> list[bytes]:
    """Frames a fuzzed connection draws from: valid ones of two calls, and bad ones."""
    pool: list[bytes] = []
    for call, stream in (("c1", "s1"), ("c1", "s2"), ("c2", "s1")):
        for channel in ("inbound", "outbound", "both"):
            for stype in ("oneway", "twoway"):
                pool.append(wavix.encode(wavix.Start(call_id=call, stream_id=stream,
                                                     channel=channel,  # type: ignore[arg-type]
                                                     stream_type=stype)))  # type: ignore[arg-type]
        for track in ("inbound", "outbound", None):
            pool.append(wavix.encode(wavix.Media(
                call_id=call, stream_id=stream,
                media=wavix.MediaBody(payload=FRAME, chunk=1, timestamp=0,
                                      track=track))))  # type: ignore[arg-type]
        pool.append(wavix.encode(wavix.Stop(call_id=call, stream_id=stream)))
        pool.append(wavix.encode(wavix.Mark(call_id=call, stream_id=stream,
                                            mark=wavix.MarkBody(name="m"))))
    pool.append(wavix.encode(wavix.Connected()))
    pool += [(CORPUS / "wavix" / e["file"]).read_bytes() for e in INDEX["wavix"]]
    return pool


SESSION_POOL = _session_pool()


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(SESSION_POOL) | mutated(VALID_MESSAGES), max_size=30),
       st.sampled_from(sorted(CODECS)))
def test_random_sequences_into_a_session_raise_only_skips(frames: list[bytes],
                                                          codec: str) -> None:
    session = StreamSession(CODECS[codec], pod="ingest-0", connection_id="conn")
    chunks = 0
    for frame in frames:
        stopped_before = session.stopped
        try:
            record = session.receive(frame)
        except (ProtocolError, SkippedMessage):
            continue
        assert not stopped_before, "nothing is accepted after stop"
        assert session.start is not None or record is None
        if isinstance(record, envelope.MediaFrame):  # a media message: its frame
            record = session.chunk_record(record)
        if isinstance(record, envelope.StreamStarted | envelope.MediaChunk
                      | envelope.MarkReceived):
            assert (record.call_id, record.stream_id) == (session.call_id, session.stream_id)
        if isinstance(record, envelope.MediaChunk):
            chunks += 1
            start = session.start
            assert start is not None
            if start.stream_type == "twoway":
                assert record.track == "inbound"
            elif start.channel != "both":
                assert record.track == start.channel
            assert record.codec == codec
        if record is not None:
            assert envelope.decode(envelope.encode(record)) == record
    assert session.chunks == chunks
    if session.start is not None:
        closed = session.close_record("stop", "fuzz")
        assert closed.chunks == chunks


# -- the corpus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", INDEX["wavix"], ids=lambda e: e["file"])
def test_corpus_wavix_message_gets_its_documented_reason(entry: dict[str, str]) -> None:
    data = (CORPUS / "wavix" / entry["file"]).read_bytes()
    with pytest.raises(ProtocolError) as info:
        wavix.parse(data)
    assert info.value.reason == entry["reason"], entry["what"]
    # Mid-stream, the same frame is skipped and the stream goes on.
    session = StreamSession(L16_24K, pod="p", connection_id="c")
    session.receive(wavix.encode(wavix.Start(call_id="c1", stream_id="s1", channel="both")))
    with pytest.raises(ProtocolError):
        session.receive(data)
    ok = session.receive(wavix.encode(wavix.Media(
        call_id="c1", stream_id="s1",
        media=wavix.MediaBody(payload=FRAME, chunk=1, timestamp=0, track="inbound"))))
    assert isinstance(ok, envelope.MediaFrame)


@pytest.mark.parametrize("entry", INDEX["envelope"], ids=lambda e: e["file"])
def test_corpus_envelope_gets_its_documented_reason(entry: dict[str, str]) -> None:
    data = (CORPUS / "envelope" / entry["file"]).read_bytes()
    with pytest.raises(EnvelopeError) as info:
        envelope.decode(data)
    assert info.value.reason == entry["reason"], entry["what"]


@pytest.mark.parametrize("entry", INDEX["session"], ids=lambda e: e["file"])
def test_corpus_session_sequence_gets_its_documented_outcomes(entry: dict[str, Any]) -> None:
    frames = (CORPUS / "session" / entry["file"]).read_text().splitlines()
    session = StreamSession(L16_24K, pod="p", connection_id="c")
    outcomes = []
    for frame in frames:
        try:
            record = session.receive(frame)
        except (ProtocolError, SkippedMessage) as exc:
            outcomes.append(exc.reason)
            continue
        outcomes.append("none" if record is None else type(record).__name__)
    assert outcomes == entry["outcomes"], entry["what"]


class _NoPublisher:
    """Enough of the Publisher protocol for routing; nothing is ever published."""

    def partition_for(self, key: bytes) -> int:
        return 0


def test_corpus_tokens_are_refused_before_the_upgrade() -> None:
    from ingest.settings import IngestSettings

    tokens = json.loads((CORPUS / "tokens.json").read_text())
    settings_ = IngestSettings(ingest_tokens=tokens["accepted"], ingest_port=0)
    server = IngestServer(settings_, publisher=_NoPublisher())  # type: ignore[arg-type]
    server._kafka_ok = server._publisher_started = True  # routing only: pretend ready

    def status(path: str) -> int | None:
        response = server.answer(path)
        return None if response is None else int(response.status)

    assert status(f"/v1/stream?token={tokens['accepted']}") is None  # upgrade goes on
    assert status(f"/v1/stream/{tokens['accepted']}") is None
    for token in tokens["refused"]:
        quoted = base64.urlsafe_b64encode(token.encode()).decode()  # never the real token
        for path in (f"/v1/stream?token={token}", f"/v1/stream/{token}",
                     f"/v1/stream?token={quoted}"):
            assert status(path) == 401, repr(token)
    assert status("/v1/stream") == 401
