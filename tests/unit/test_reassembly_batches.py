"""``MediaBatch`` records reassemble exactly as the ``MediaChunk`` records of their frames.

Ingest coalesces a stream's consecutive frames into one record (CALLREC_INGEST_COALESCE_MS);
the recorder takes a batch's frames in bulk. Whatever the losses, duplicates and arrival
order of the frames, and wherever the batches are cut, the WAV bytes, the counts and the
custody must be those of the same frames sent one record each.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from schemas import envelope
from schemas.codecs import PCMU_8K
from tests.unit.test_reassembly import PROPERTY, assemble, closed, media, started


def batched(records: list[envelope.Record], cuts: set[int]) -> list[envelope.Record]:
    """Consecutive chunks of one stream (and codec) as batches; a new batch begins at every
    index in ``cuts``. Other records stay where they were, between batches."""
    out: list[envelope.Record] = []
    run: list[envelope.MediaChunk] = []

    def flush() -> None:
        if run:
            first = run[0]
            out.append(
                envelope.MediaBatch(
                    call_id=first.call_id,
                    stream_id=first.stream_id,
                    codec=first.codec,
                    frames=[
                        envelope.MediaFrame(
                            track=c.track,
                            chunk=c.chunk,
                            timestamp_ms=c.timestamp_ms,
                            payload=c.payload,
                            received_ns=c.received_ns,
                            seq=c.seq,
                        )
                        for c in run
                    ],
                )
            )
            run.clear()

    for i, record in enumerate(records):
        if not isinstance(record, envelope.MediaChunk):
            flush()
            out.append(record)
            continue
        if run and (
            i in cuts or (run[0].stream_id, run[0].codec) != (record.stream_id, record.codec)
        ):
            flush()
        run.append(record)
    flush()
    return out


def call_records(n: int) -> list[envelope.Record]:
    """A ``both`` stream (tracks interleaved, as Wavix sends them) and a oneway stream."""
    return [
        started("s-both", "both"),
        started("s-in", "inbound", connection="conn-2"),
        *(r for i in range(n) for r in (media("s-both", i), media("s-both", i, track="outbound"))),
        *(media("s-in", i) for i in range(n)),
        closed("s-both", 2 * n),
        closed("s-in", n),
    ]


def same_assembly(per_frame: list[envelope.Record], cuts: set[int], window_ms: int) -> None:
    batches = batched(per_frame, cuts)
    assert any(isinstance(r, envelope.MediaBatch) for r in batches)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        expected, expected_wav = assemble(per_frame, tmp, window_ms=window_ms)
        got, got_wav = assemble(batches, tmp, window_ms=window_ms)
    assert got_wav == expected_wav
    # Counts (duplicates, late, out of order, jitter...) and custody too: the same frames
    # in the same arrival order, whatever the records that carried them.
    assert got == expected


@PROPERTY
@given(data=st.data(), n=st.integers(1, 30), window_ms=st.sampled_from([10, 60, 2000]))
def test_batches_of_lost_repeated_and_reordered_frames_give_the_same_recording(data, n, window_ms):
    records = call_records(n)
    lost = data.draw(st.sets(st.integers(0, len(records) - 1), max_size=n), label="lost")
    kept = [
        r for i, r in enumerate(records) if i not in lost or not isinstance(r, envelope.MediaChunk)
    ]
    extra = data.draw(st.lists(st.sampled_from(kept), max_size=n), label="duplicates")
    arrival = data.draw(st.permutations(kept + extra), label="arrival order")
    cuts = data.draw(st.sets(st.integers(0, len(arrival))), label="batch cuts")
    same_assembly(arrival, cuts, window_ms)


@PROPERTY
@given(n=st.integers(1, 80), size=st.integers(1, 50))
def test_in_order_batches_of_any_size_give_the_same_recording(n, size):
    records = call_records(n)
    same_assembly(records, set(range(0, len(records), size)), 2000)


def test_a_batch_in_an_unknown_or_other_codec_is_rejected_frame_by_frame(tmp_path):
    per_frame: list[envelope.Record] = [
        started("s-in"),
        *(media("s-in", i) for i in range(5)),
        *(media("s-in", i, codec=PCMU_8K) for i in range(5, 8)),  # not the spool's codec
        closed("s-in", 8),
    ]
    same_assembly(per_frame, set(), 2000)
    result, _ = assemble(batched(per_frame, set()), tmp_path)
    [stream] = result.streams
    assert (stream.chunks, stream.rejected) == (8, 3)
    assert "3 chunks rejected" in result.reason
