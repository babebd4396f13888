"""A healthy stream's track is copied in bulk: the same bytes and counts as the merge.

``assemble_track`` copies the payloads of a gap-free run (``ChunkSpool.contiguous_run``)
without visiting each chunk; these tests hold it to the general merge's result.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codecs import CODECS, Codec
from workers.recorder.spool import ChunkSpool
from workers.recorder.tracks import TrackSource, assemble_track


def spool_of(directory: Path, name: str, codec: Codec, frames: list[tuple[int, int, bytes]]
             ) -> ChunkSpool:
    spool = ChunkSpool(directory, name, codec, window_ms=40)
    for chunk, ts, payload in frames:
        spool.add(chunk, ts, payload, 1_000_000 * ts)
    return spool


@settings(max_examples=150, deadline=None)
@given(
    codec_id=st.sampled_from(sorted(CODECS)),
    first_chunk=st.integers(0, 1000),
    first_ts=st.integers(0, 5000),
    frame_ms=st.sampled_from([10, 20, 30]),
    count=st.integers(1, 80),
    offset_ms=st.integers(0, 3000),
    max_duration_ms=st.sampled_from([100, 700, 2500, 6 * 3600 * 1000]),
)
def test_bulk_copy_equals_the_merge(codec_id: str, first_chunk: int, first_ts: int,
                                    frame_ms: int, count: int, offset_ms: int,
                                    max_duration_ms: int) -> None:
    codec = CODECS[codec_id]
    size = codec.bytes_for_ms(frame_ms)
    frames = [(first_chunk + i, first_ts + i * frame_ms, bytes([i % 251 + 1]) * size)
              for i in range(count)]
    results = {}
    with tempfile.TemporaryDirectory() as d:
        for bulk in (True, False):
            spool = spool_of(Path(d), f"s-{bulk}", codec, frames)
            assert spool.contiguous_run() is not None
            out = Path(d) / f"track-{bulk}.raw"
            result = assemble_track("inbound", [TrackSource(spool, 0, offset_ms)], codec, out,
                                    max_duration_ms=max_duration_ms, bulk=bulk)
            results[bulk] = (out.read_bytes(), result.length, result.counts, result.overflow)
    assert results[True] == results[False]


@settings(max_examples=60, deadline=None)
@given(count=st.integers(3, 40), data=st.data())
def test_a_stream_with_a_hole_a_duplicate_or_a_swap_is_not_one_run(count: int,
                                                                 data: st.DataObject) -> None:
    codec = CODECS["L16/16000"]
    size = codec.bytes_for_ms(20)
    frames = [(i, i * 20, bytes([i + 1]) * size) for i in range(count)]
    k = data.draw(st.integers(1, count - 2), label="where")
    broken = data.draw(st.sampled_from([
        frames[:k] + frames[k + 1 :],                           # a hole
        [*frames[:k + 1], frames[k], *frames[k + 1:]],        # a duplicate
        [*frames[:k], frames[k + 1], frames[k], *frames[k + 2:]],  # two swapped
        [*frames[:k], (k, k * 20, bytes([9]) * (size // 2)), *frames[k + 1:]],  # a short one
    ]), label="broken")
    with tempfile.TemporaryDirectory() as d:
        assert spool_of(Path(d), "s", codec, broken).contiguous_run() is None
