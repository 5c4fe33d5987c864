"""Cutting a turn's audio into 20 ms opus frames in Discord's format."""

from __future__ import annotations

import numpy as np
import pytest

from glyphoxa_audio.opus import OpusDecoder
from glyphoxa_tts.frames import FRAME_SAMPLES, FrameEncoder

pytestmark = pytest.mark.unit


def tone(samples: int, start: int = 0) -> np.ndarray:
    t = (np.arange(samples) + start) / 48_000
    return (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)


def test_whole_frames_now_the_rest_with_the_next_push():
    encoder = FrameEncoder()
    assert FRAME_SAMPLES == 960
    assert len(list(encoder.push(tone(1500)))) == 1
    assert len(list(encoder.push(tone(500, 1500)))) == 1  # 540 left over + 500 = one frame
    assert len(encoder.finish()) == 1  # the last 80 samples, padded
    assert encoder.finish() == []


def test_frames_decode_to_48k_stereo_with_the_same_audio_on_both_channels():
    encoder = FrameEncoder()
    audio = tone(48_000)
    packets = [*encoder.push(audio[:20_000]), *encoder.push(audio[20_000:]), *encoder.finish()]
    assert len(packets) == 50
    decoder = OpusDecoder(48_000, 2)
    decoded = np.concatenate([decoder.decode(p) for p in packets])
    assert decoded.shape == (48_000, 2)
    assert np.array_equal(decoded[:, 0], decoded[:, 1])
    # opus is lossy and delays a few ms; the tone's energy comes through
    assert np.sqrt(np.mean(decoded[2000:, 0].astype(float) ** 2)) > 3000
