"""Several opus frames in one ``audio.out`` message (docs/contract.md).

tts makes a sentence's frames far faster than they play, and each message costs the same
to publish, store, ack and deliver whatever it carries; at 20 sessions one message per 20 ms
frame was most of what tts and nats-server spent (docs/benchmarks.md 9b, 9c). So a turn's
first frame goes out alone (nothing waits for its neighbours) and the rest go in batches of
up to ``MAX_FRAMES`` frames: header ``Glx-Frames`` (the count, absent for one frame),
``Glx-Seq`` the first frame's number, and a body of the frames one after another, each
after its length as two bytes (big-endian). A message without ``Glx-Frames`` is one raw
frame, as every message was before batching, so recorded sessions replay unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from glyphoxa_events import headers as H

MAX_FRAMES = 25
"""Frames one message may carry: 0.5 s of audio."""
MAX_FRAME_BYTES = 1275
"""The largest opus packet (RFC 6716, 3.2.1)."""


class BadFrames(ValueError):
    """An ``audio.out`` message whose frames cannot be read."""


def pack(frames: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
    """The body and the header to add for ``frames`` (one frame: itself, no header)."""
    if not 1 <= len(frames) <= MAX_FRAMES:
        raise ValueError(f"{len(frames)} frames in one message (1-{MAX_FRAMES})")
    if len(frames) == 1:
        return frames[0], {}
    body = bytearray()
    for frame in frames:
        if not 0 < len(frame) <= MAX_FRAME_BYTES:
            raise ValueError(f"an opus frame of {len(frame)} bytes")
        body += len(frame).to_bytes(2, "big")
        body += frame
    return bytes(body), {H.FRAMES: str(len(frames))}


def unpack(headers: Mapping[str, str], body: bytes) -> list[bytes]:
    """The frames of one message, in order; raises ``BadFrames``."""
    raw = headers.get(H.FRAMES)
    if raw is None:
        return [body]
    try:
        count = int(raw)
    except ValueError:
        raise BadFrames(f"{H.FRAMES} is not an integer: {raw[:20]!r}") from None
    if not 1 <= count <= MAX_FRAMES:
        raise BadFrames(f"{H.FRAMES} {count} out of range 1-{MAX_FRAMES}")
    frames: list[bytes] = []
    at = 0
    while at < len(body):
        if at + 2 > len(body):
            raise BadFrames("a frame's length is cut off")
        size = int.from_bytes(body[at:at + 2], "big")
        if not 0 < size <= MAX_FRAME_BYTES or at + 2 + size > len(body):
            raise BadFrames(f"frame {len(frames)} of {size} bytes does not fit the body")
        frames.append(body[at + 2:at + 2 + size])
        at += 2 + size
    if len(frames) != count:
        raise BadFrames(f"{len(frames)} frames in a body that says {count}")
    return frames
