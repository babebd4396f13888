"""The on-disk chunk spool: sorted output for any input order, bounded RAM, compact sets."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codecs import L16_16K, L16_24K, PCMU_8K
from workers.recorder.errors import FinalizedError, SpoolCorruptError
from workers.recorder.spool import (
    FAN_IN,
    ChunkSpool,
    IntervalSet,
)


@given(st.lists(st.integers(-50, 50)), st.lists(st.integers(-50, 50)))
def test_interval_set_behaves_like_a_set(xs, ys):
    a, b = IntervalSet(), IntervalSet(ys)
    model: set[int] = set()
    for x in xs:
        assert a.add(x) == (x not in model)
        model.add(x)
    assert len(a) == len(model)
    assert all((x in a) == (x in model) for x in range(-60, 60))
    assert a.missing == (max(model) - min(model) + 1 - len(model) if model else 0)
    assert a.isdisjoint(b) == model.isdisjoint(ys)
    union = a.union(b)
    assert [x for x in range(-60, 60) if x in union] == sorted(model | set(ys))
    runs = list(a.intervals())
    assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(runs)), "merged"


def test_interval_set_of_a_long_gapless_stream_is_one_run():
    s = IntervalSet(range(100_000))
    assert list(s.intervals()) == [(0, 100_000)]
    assert s.missing == 0


CHUNKS = st.lists(
    st.tuples(st.integers(0, 50), st.integers(0, 100), st.binary(min_size=1, max_size=8)).map(
        lambda t: (t[0], t[1] * 10, t[2] * 2)  # whole 16-bit samples
    ),
    max_size=80,
)


@settings(deadline=None, max_examples=80)
@given(CHUNKS, st.sampled_from([1, 10, 1000]))
def test_records_come_back_sorted_and_complete_for_any_order(chunks, window_ms):
    with tempfile.TemporaryDirectory() as d:
        spool = ChunkSpool(Path(d), "s", L16_16K, window_ms=window_ms)
        for chunk, ts, data in chunks:
            assert spool.add(chunk, ts, data)
            assert spool.buffered_bytes <= spool.ram_limit_bytes
        got = list(spool.records())
        spool.discard()
        assert not list(Path(d).iterdir())
    assert got == sorted((ts, c, p) for c, ts, p in chunks)
    assert spool.received == len(chunks)
    assert spool.duplicates == len(chunks) - len({c for c, _, _ in chunks})


def test_late_runs_are_merged_level_by_level(tmp_path):
    spool = ChunkSpool(tmp_path, "s", PCMU_8K, window_ms=0)  # every late chunk is a run
    n = FAN_IN**2 + 5
    spool.add(10_000, 100_000, b"\x01")
    for i in reversed(range(n)):
        spool.add(i, i, b"\x02")
    assert spool.late == n - 1
    assert len(list(tmp_path.iterdir())) < 2 * FAN_IN + 1
    assert [r[0] for r in spool.records()] == [*range(n), 100_000]
    spool.discard()


def test_counts_and_rejections(tmp_path):
    spool = ChunkSpool(tmp_path, "s", L16_16K, max_duration_ms=1000)
    assert spool.add(2, 40, b"\0\0")
    assert spool.add(1, 20, b"\0\0")  # out of order
    assert spool.add(2, 40, b"\0\0")  # duplicate
    assert not spool.add(3, 60, b"\0")  # half a sample
    assert not spool.add(3, 60, b"")
    assert not spool.add(-1, 60, b"\0\0")
    assert not spool.add(3, 1000, b"\0\0")  # ends past max_duration_ms
    assert (spool.received, spool.out_of_order, spool.duplicates, spool.rejected) == (3, 1, 1, 4)
    spool.finish()
    with pytest.raises(FinalizedError):
        spool.add(4, 80, b"\0\0")
    spool.discard()


def test_a_truncated_run_file_is_a_named_error(tmp_path):
    spool = ChunkSpool(tmp_path, "s", L16_16K, window_ms=0)
    spool.add(1, 0, b"\0\0" * 10)
    spool.finish()
    run = tmp_path / "s.run"
    run.write_bytes(run.read_bytes()[:-3])
    with pytest.raises(SpoolCorruptError):
        list(spool.records())
    spool.discard()


def test_jitter_follows_rfc_3550_in_arrival_order(tmp_path: Path) -> None:
    spool = ChunkSpool(tmp_path, "j", L16_24K)
    frame = bytes(960)
    # Perfectly paced arrivals: no jitter.
    for n in range(10):
        spool.add(n, n * 20, frame, received_ns=n * 20_000_000)
    assert spool.jitter_ms == 0
    # One chunk 16 ms late, the next on time again: |D| = 16 then 16.
    spool.add(10, 200, frame, received_ns=216_000_000)
    assert spool.jitter_ms == pytest.approx(1.0)
    spool.add(11, 220, frame, received_ns=220_000_000)
    assert spool.jitter_ms == pytest.approx(1.0 + (16 - 1.0) / 16)
    spool.discard()
