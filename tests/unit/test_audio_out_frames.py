"""Several opus frames in one audio.out message: what tts packs, the edge and player unpack."""

from __future__ import annotations

import pytest

from glyphoxa_events import headers as H
from glyphoxa_events.frames import MAX_FRAMES, BadFrames, pack, unpack


def test_one_frame_is_sent_as_it_is():
    body, extra = pack([b"\xfc\x01\x02"])
    assert (body, extra) == (b"\xfc\x01\x02", {})
    assert unpack({}, body) == [b"\xfc\x01\x02"]


def test_frames_round_trip_in_order():
    frames = [bytes([i]) * (i + 1) for i in range(MAX_FRAMES)]
    body, extra = pack(frames)
    assert extra == {H.FRAMES: str(MAX_FRAMES)}
    assert len(body) == sum(2 + len(f) for f in frames)
    assert unpack(extra, body) == frames


def test_a_message_without_the_header_is_one_raw_frame_as_recorded_before_batching():
    raw = b"\x00\x05hello"  # looks like a length prefix, but there is no Glx-Frames
    assert unpack({}, raw) == [raw]


@pytest.mark.parametrize(("count", "body", "why"), [
    ("x", b"\x00\x01a", "not an integer"),
    ("0", b"", "out of range"),
    (str(MAX_FRAMES + 1), b"\x00\x01a", "out of range"),
    ("2", b"\x00\x01a", "1 frames in a body that says 2"),
    ("2", b"\x00\x01a\x00\x01b\x00\x01c", "3 frames in a body that says 2"),
    ("2", b"\x00\x01a\x00", "cut off"),
    ("2", b"\x00\x01a\x00\x05bc", "does not fit"),
    ("2", b"\x00\x00\x00\x01a", "of 0 bytes"),
])
def test_a_body_that_does_not_match_its_header_is_refused(count, body, why):
    with pytest.raises(BadFrames, match=why):
        unpack({H.FRAMES: count}, body)


def test_pack_refuses_what_no_reader_could_take():
    with pytest.raises(ValueError):
        pack([])
    with pytest.raises(ValueError):
        pack([b"a"] * (MAX_FRAMES + 1))
    with pytest.raises(ValueError):
        pack([b"a", b""])
    with pytest.raises(ValueError):
        pack([b"a", b"x" * 1276])
