"""The stereo test file through ``callrec simulate`` into ``callrec.media``, both layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrec import simulator
from deploy.local import stack
from infra.audio import encode_pcm, load_audio
from schemas import envelope
from schemas.codecs import L16_24K
from tests.integration.ingestutil import TOKEN, ingest_settings, running_ingest, stream_url
from tests.integration.kafkautil import chunks, closes, read_until


@pytest.mark.parametrize("layout", ["both", "oneway"])
async def test_stereo_file_lands_in_kafka_once_in_order_and_byte_equal(
    kafka: stack.KafkaServer, media_topic: str, data_dir: Path, layout: simulator.Layout
) -> None:
    source = load_audio(data_dir / "stereo_diarization.wav", L16_24K.sample_rate)
    expected = {"inbound": encode_pcm(source[0], L16_24K),
                "outbound": encode_pcm(source[1], L16_24K)}
    [call] = simulator.build_calls(data_dir / "stereo_diarization.wav", layout=layout,
                                   call_id_prefix=f"stereo-{layout}")
    assert dict(call.tracks) == expected

    async with running_ingest(ingest_settings(kafka.bootstrap, media_topic)) as server:
        report = await simulator.stream_call(stream_url(server, None), call, realtime=False,
                                             token=TOKEN)
        assert report.completed
        streams = len(report.streams)
        assert streams == (1 if layout == "both" else 2)
        records = await read_until(kafka.bootstrap, media_topic,
                                   lambda r: len(closes(r)) == streams)

    starts = [c.record for c in records if isinstance(c.record, envelope.StreamStarted)]
    assert sorted(s.channel for s in starts) == (
        ["both"] if layout == "both" else ["inbound", "outbound"]
    )
    assert all(c.reason == "stop" for c in closes(records))
    assert len({c.partition for c in records}) == 1, "one call, one partition"
    got = chunks(records, call.call_id)
    for track, pcm in expected.items():
        mine = [c for c in got if c.track == track]
        numbers = [c.chunk for c in mine]
        assert numbers == list(range(1, len(numbers) + 1)), f"{track}: in order, each once"
        assert b"".join(c.payload for c in mine) == pcm
    # Control records frame the stream: its start before its first chunk, close after the last.
    for start in starts:
        offsets = [c.offset for c in records if c.record.stream_id == start.stream_id]
        kinds = [type(c.record) for c in sorted(
            (c for c in records if c.record.stream_id == start.stream_id), key=lambda c: c.offset)]
        assert kinds[0] is envelope.StreamStarted and kinds[-1] is envelope.StreamClosed
        assert len(offsets) == len(set(offsets))
