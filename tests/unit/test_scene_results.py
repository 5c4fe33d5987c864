"""The scene player's playback of received frames (reorder, loss concealment)."""

import numpy as np
import pytest

from glyphoxa_audio.opus import OpusEncoder, frames_of
from glyphoxa_audio.wav import to_stereo
from glyphoxa_cli.results import _play_turn

pytestmark = pytest.mark.unit


def test_frames_arriving_out_of_order_play_in_order_and_a_lost_one_is_concealed():
    t = np.arange(48000) / 48000
    pcm = (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16)
    enc = OpusEncoder()
    packets = [enc.encode(to_stereo(f)) for f in frames_of(pcm, 960)]
    arrivals = [(seq, 1000 + order, packet, "greta")
                for order, (seq, packet) in enumerate(reversed(list(enumerate(packets))))]
    del arrivals[10]  # one frame never arrives
    audio = _play_turn("alex-1", "greta", arrivals)
    assert len(audio) == len(packets) * 960  # the lost frame's 20 ms is filled, not dropped
    spectrum = np.abs(np.fft.rfft(audio[4800:].astype(float)))
    assert abs(np.argmax(spectrum) * 48000 / len(audio[4800:]) - 300) < 5
