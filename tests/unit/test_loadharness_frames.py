"""The reliability load generator's frames: the audio the verifier expects, framed so a
WebSocket server reads exactly the message that was built."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from bench.harness.wire import ws_frame
from bench.loadharness import calls


@pytest.mark.parametrize("index", [0, 7, 399])
@pytest.mark.parametrize("track", calls.TRACKS)
def test_each_frame_is_its_slice_of_the_track_the_verifier_rebuilds(index: int,
                                                                    track: str) -> None:
    frames = 700  # longer than the source: the loop wraps around inside the call
    whole = calls.track_bytes(index, track, frames)
    size = calls.FRAME_SAMPLES * 2
    for chunk in (1, 2, 350, 699, 700):
        assert calls.frame(index, track, chunk) == whole[(chunk - 1) * size : chunk * size]


@pytest.mark.parametrize("size", [0, 125, 126, 1300, 65535, 65536])
def test_a_prebuilt_client_frame_parses_as_that_masked_text_frame(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    reader = StreamReader()
    reader.feed_data(ws_frame(payload))
    parser = Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    else:  # pragma: no cover - the whole frame was fed
        pytest.fail("frame incomplete")
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == payload
