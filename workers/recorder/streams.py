"""What the assembler knows of each stream, and how the streams are aligned and described.

:class:`StreamState` is the small, bounded state of one Wavix stream during
reassembly (starts and closes per connection, spools per track, counts, marks);
the functions turn a recording's streams into its clock and offsets
(:func:`align`), its codec and tracks, the manifest's custody entries and timeline,
and the reasons it is incomplete (docs/reassembly.md).
"""

from __future__ import annotations

import re
from typing import Literal, TypeVar

from schemas import envelope
from schemas.codecs import DEFAULT_CODEC, Codec, codec_by_id
from schemas.custody import (
    CloseEntry,
    StreamCustody,
    TimelineEntry,
    iso_time,
    parse_iso_ns,
)
from schemas.errors import UnknownCodecError
from schemas.wavix import Track
from workers.recorder.spool import (
    ChunkSpool,
)
from workers.recorder.tracks import TrackResult

TRACK_ORDER: tuple[Track, ...] = ("inbound", "outbound")
"""Channel order of the WAV: inbound = 0 (left), outbound = 1 (right)."""

_PRECISE_TIME = re.compile(r"\d{2}:\d{2}:\d{2}[.,]\d{3}")
_ZONED_TIME = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")

MAX_MARKS = 10_000
"""Marks kept per stream for the manifest's timeline (a few hundred bytes each); later
ones are counted in ``StreamCustody.marks`` but not listed, so RAM stays bounded."""

Clock = Literal["event_time", "received", "none"]
"""Which clock aligned the streams: Wavix ``event_time``, ingest ``received_ns``, or none."""



def event_time_ns(value: str | None) -> int | None:
    """A Wavix ``event_time`` (ISO-8601) as Unix ns; None unless it has ms precision.

    Whole seconds cannot align tracks to better than a second; the ingest pods'
    receive times (ns) are then the better clock. No zone means UTC; only
    differences between streams are used, so a consistent zone error is harmless.
    """
    if not value or not _PRECISE_TIME.search(value):
        return None
    return parse_iso_ns(value)


class StreamState:
    """What the assembler knows of one stream so far (all of it small and bounded)."""

    def __init__(self, stream_id: str, index: int) -> None:
        self.stream_id = stream_id
        self.index = index  # arrival index: names spool files, nothing else
        self.starts: dict[str, envelope.StreamStarted] = {}
        """Per connection (reconnects open new connections)."""
        self.closes: dict[str, envelope.StreamClosed] = {}
        self.spools: dict[Track, ChunkSpool] = {}
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.end_ms = 0  # the end of its latest audio, in the stream's own time
        self.chunks = 0  # media records received, whatever became of them
        self.rejected = 0  # media records with an unknown codec, or not their spool's
        self.marks = 0
        self.mark_records: set[envelope.MarkReceived] = set()
        """Distinct marks (a replayed record is the same record), up to MAX_MARKS."""

    @property
    def first_start(self) -> envelope.StreamStarted | None:
        return min(self.starts.values(), key=record_order, default=None)

    @property
    def closed(self) -> bool:
        return bool(self.closes) and self.starts.keys() <= self.closes.keys()




def record_order(record: envelope.StreamStarted | envelope.StreamClosed) -> tuple[int, bytes]:
    """A total order on control records, so that choosing one never depends on arrival."""
    return record.received_ns, envelope.encode(record)


_R = TypeVar("_R", envelope.StreamStarted, envelope.StreamClosed)


def earlier(old: _R | None, new: _R) -> _R:
    """Of two control records for one connection (a replayed duplicate), the first in order."""
    return new if old is None or record_order(new) < record_order(old) else old


def align(streams: list[StreamState]) -> tuple[Clock, int, dict[str, int]]:
    """Each stream's offset in the recording (ms), the clock used and the start time (ns).

    One clock for all streams, never a mix: Wavix ``event_time`` when every
    started stream has one with ms precision (one sender's clock, no network
    delay), else the ingest pods' receive times. Time 0 is the earliest start;
    a stream whose start record never arrived is placed at 0 (and the
    recording is marked incomplete).
    """
    started = [st for st in streams if st.starts]
    streams_by_id = {st.stream_id: st for st in started}
    offsets = {st.stream_id: 0 for st in streams}
    if not started:
        start_ns = min((st.first_ns for st in streams if st.first_ns is not None), default=0)
        return "none", start_ns, offsets
    received = {st.stream_id: min(r.received_ns for r in st.starts.values()) for st in started}
    events: dict[str, int | None] = {}
    for st in started:
        parsed = [t for r in st.starts.values() if (t := event_time_ns(r.event_time)) is not None]
        events[st.stream_id] = min(parsed, default=None)
    clock: Clock = "event_time" if all(t is not None for t in events.values()) else "received"
    times = received
    if clock == "event_time":
        times = {k: v for k, v in events.items() if v is not None}
    t0 = min(times.values())
    for stream_id, t in times.items():
        offsets[stream_id] = (t - t0 + 500_000) // 1_000_000
    first = min(times, key=lambda k: (times[k], k))
    # Time 0 on the aligning clock when Wavix said its zone: then the start time is the
    # sender's, the same on every run and backend for the same stream. Without a zone,
    # the pod's receive time, so a zone mistake cannot misdate the recording.
    first_event = next(iter(r.event_time for r in streams_by_id[first].starts.values()), None)
    if clock == "event_time" and first_event and _ZONED_TIME.search(first_event):
        return clock, times[first], offsets
    return clock, received[first], offsets


def timeline(
    order: list[StreamState], clock: Clock, offsets: dict[str, int]
) -> list[TimelineEntry]:
    """Every stream's marks placed in the recording, as its audio is: the stream's offset
    plus the mark's time since the stream's start, on the recording's clock (Wavix
    ``event_time`` when the recording is aligned on it and the mark has one; else the
    ingest pods' receive times). A function of the set of records, like the audio."""
    out: list[TimelineEntry] = []
    for st in order:
        received0 = min((r.received_ns for r in st.starts.values()), default=None)
        event0 = min((t for r in st.starts.values()
                      if (t := event_time_ns(r.event_time)) is not None), default=None)
        for mark in st.mark_records:
            at: int | None = None
            used: Clock = "received"
            mark_event = event_time_ns(mark.event_time)
            if clock == "event_time" and event0 is not None and mark_event is not None:
                at, used = offsets[st.stream_id] + round_ms(mark_event - event0), "event_time"
            elif received0 is not None:
                at = offsets[st.stream_id] + round_ms(mark.received_ns - received0)
            out.append(TimelineEntry(
                at_ms=at, kind="mark", stream_id=st.stream_id, name=mark.name, seq=mark.seq,
                event_time=mark.event_time, received=iso_time(mark.received_ns, 6), clock=used,
            ))
    out.sort(key=lambda e: (e.at_ms is None, e.at_ms or 0, e.stream_id, e.received, e.name,
                            e.seq or 0, e.event_time or ""))
    return out


def round_ms(ns: int) -> int:
    return (ns + 500_000) // 1_000_000


def recording_codec(order: list[StreamState]) -> Codec:
    """The codec of the earliest stream that names one we know; L16/24000 otherwise."""
    for st in order:
        start = st.first_start
        ids = [start.codec] if start else []
        ids += [st.spools[t].codec.id for t in TRACK_ORDER if t in st.spools]
        for codec_id in ids:
            try:
                return codec_by_id(codec_id)
            except UnknownCodecError:
                continue
    return DEFAULT_CODEC


def stream_tracks(order: list[StreamState]) -> list[Track]:
    """Tracks declared by the streams' channels or seen in chunks, in channel order.

    A declared track is kept even if silent, so a ``both`` stream always gives a
    stereo WAV with inbound on the left.
    """
    present: set[str] = set()
    for st in order:
        present.update(st.spools)
        for start in st.starts.values():
            if start.stream_type == "twoway":
                present.add("inbound")
            elif start.channel == "both":
                present.update(TRACK_ORDER)
            else:
                present.add(start.channel)
    return [t for t in TRACK_ORDER if t in present] or ["inbound"]


def chunk_numbering(st: StreamState) -> tuple[str, int]:
    """How the stream numbers its chunks, and how many numbers are missing.

    A ``both`` stream may count per track or with one counter for both tracks;
    with one counter each track alone looks half lost. Two tracks whose number
    sets never coincide share a counter: gaps are then counted in the union.
    """
    sets = [st.spools[t].seen for t in TRACK_ORDER if t in st.spools and st.spools[t].seen.count]
    if len(sets) == 2 and sets[0].isdisjoint(sets[1]):
        return "shared", sets[0].union(sets[1]).missing
    return "per_track", sum(s.missing for s in sets)


def stream_custody(st: StreamState, offset_ms: int, excluded: int) -> StreamCustody:
    start = st.first_start
    closes = sorted(st.closes.values(), key=record_order)
    spools = [st.spools[t] for t in TRACK_ORDER if t in st.spools]
    numbering, missing = chunk_numbering(st)
    return StreamCustody(
        stream_id=st.stream_id,
        stream_type=start.stream_type if start else None,
        channel=start.channel if start else None,
        codec=start.codec if start else (spools[0].codec.id if spools else ""),
        tracks=[t for t in TRACK_ORDER if t in st.spools],
        event_time=start.event_time if start else None,
        start_time=iso_time(start.received_ns, 6) if start else None,
        offset_ms=offset_ms,
        ingest_pods=sorted(
            {s.ingest_pod for s in st.starts.values()} | {c.ingest_pod for c in closes}
        ),
        connection_ids=sorted(st.starts.keys() | st.closes.keys()),
        first_arrival=None if st.first_ns is None else iso_time(st.first_ns, 6),
        last_arrival=None if st.last_ns is None else iso_time(st.last_ns, 6),
        chunks=st.chunks,
        published=sum(c.chunks for c in closes) if closes else None,
        missing_chunks=missing,
        numbering=numbering,
        duplicates=sum(s.duplicates for s in spools),
        out_of_order=sum(s.out_of_order for s in spools),
        rejected=st.rejected + excluded + sum(s.rejected for s in spools),
        marks=st.marks,
        closes=[
            CloseEntry(
                reason=c.reason,
                detail=c.detail,
                ingest_pod=c.ingest_pod,
                connection_id=c.connection_id,
                time=iso_time(c.received_ns, 6),
                chunks=c.chunks,
                invalid=c.invalid,
            )
            for c in closes
        ],
    )


def incomplete_reasons(
    order: list[StreamState],
    custody: list[StreamCustody],
    tracks: list[TrackResult],
    codec: Codec,
    cut_reason: str | None,
    max_duration_ms: int,
) -> list[str]:
    """Why the recording is incomplete, in a fixed order (empty: complete)."""
    reasons: list[str] = []
    for st, cu in zip(order, custody, strict=True):
        name = f"stream {st.stream_id}"
        if not st.starts:
            reasons.append(f"{name}: start record missing")
        if st.starts.keys() - st.closes.keys() or not st.closes:
            reasons.append(f"{name}: not closed" + (f" ({cut_reason})" if cut_reason else ""))
        reasons.extend(f"{name} {c.reason}: {c.detail}" for c in cu.closes if c.reason != "stop")
        if cu.codec != codec.id:
            reasons.append(f"{name}: codec {cu.codec} differs from recording codec {codec.id}")
        if cu.published is not None and cu.chunks < cu.published:
            lost = cu.published - cu.chunks
            reasons.append(f"{name}: {lost} of {cu.published} published chunks not received")
        if cu.missing_chunks:
            reasons.append(f"{name}: gaps, {cu.missing_chunks} chunks missing")
        if cu.rejected:
            reasons.append(f"{name}: {cu.rejected} chunks rejected")
    for t in tracks:
        if t.overflow:
            reasons.append(
                f"track {t.track}: {t.overflow} chunks past {max_duration_ms} ms rejected"
            )
    if not any(t.length for t in tracks):
        reasons.append("no audio")
    return reasons
