"""The two real engines: Silero on onnxruntime (without torch) and webrtcvad."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from glyphoxa_vad.core import SessionVad
from glyphoxa_vad.engines import build_engine
from glyphoxa_vad.engines.silero import model_path
from tests.unit.vad.vad_feed import (
    BASE_NS,
    FakeClock,
    Feed,
    default_config,
    discord_packets,
    run,
    track,
    utterances,
)

pytestmark = pytest.mark.unit

MS = 1_000_000


@pytest.fixture(scope="module")
def silero():  # type: ignore[no-untyped-def]
    return build_engine("silero")


def test_silero_model_is_found_without_importing_the_package(silero) -> None:  # type: ignore[no-untyped-def]
    assert model_path().name == "silero_vad.onnx"
    assert "silero_vad" not in sys.modules  # its __init__ would import torch
    assert "torch" not in sys.modules


def test_silero_stream_is_deterministic_after_reset(silero) -> None:  # type: ignore[no-untyped-def]
    stream = silero.stream()
    audio = (np.random.default_rng(3).normal(0, 3000, 512 * 6)).astype(np.int16)
    first = [stream.probability(audio[i:i + 512]) for i in range(0, len(audio), 512)]
    stream.reset()
    again = [stream.probability(audio[i:i + 512]) for i in range(0, len(audio), 512)]
    assert first == again
    assert all(0.0 <= p <= 1.0 for p in first)
    stream.reset()
    assert stream.probability(np.zeros(512, dtype=np.int16)) < 0.1


def test_silero_streams_keep_their_own_state(silero) -> None:  # type: ignore[no-untyped-def]
    a, b = silero.stream(), silero.stream()
    noise = (np.random.default_rng(4).normal(0, 8000, 512 * 4)).astype(np.int16)
    for i in range(0, len(noise), 512):
        a.probability(noise[i:i + 512])
    fresh = silero.stream()
    zeros = np.zeros(512, dtype=np.int16)
    assert b.probability(zeros) == fresh.probability(zeros)


def test_engines_check_chunk_sizes(silero) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        silero.stream().probability(np.zeros(320, dtype=np.int16))
    with pytest.raises(ValueError):
        build_engine("webrtc", frame_ms=30).stream().probability(np.zeros(320, dtype=np.int16))


def test_webrtc_tells_sound_from_silence() -> None:
    stream = build_engine("webrtc", aggressiveness=3, frame_ms=20).stream()
    assert stream.chunk_samples == 320
    assert stream.probability(np.zeros(320, dtype=np.int16)) == 0.0
    voiced = track([("tone", 40)])[::3][:320]  # 48 kHz -> 16 kHz by decimation is enough here
    assert stream.probability(voiced) == 1.0


def test_unknown_engine_and_bad_webrtc_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        build_engine("whisper")
    with pytest.raises(ValueError):
        build_engine("webrtc", aggressiveness=4)
    with pytest.raises(ValueError):
        build_engine("webrtc", frame_ms=25)


def test_webrtc_segments_self_made_bursts() -> None:
    """Tone bursts in opus, Discord style, through the light engine: one utterance each."""
    bursts = [(0, 700), (2000, 1200), (5000, 400)]
    feed = Feed()
    for at_ms, ms in bursts:
        feed.add("sam", discord_packets(track([("tone", ms), ("silence", 300)])),
                 BASE_NS + at_ms * MS)
    clock = FakeClock()
    vad = SessionVad(default_config(), build_engine("webrtc"), monotonic_ns=clock)
    utts = utterances(run(vad, feed.ordered(), clock))
    assert len(utts) == len(bursts)
    for utt, (at_ms, ms) in zip(utts, bursts):
        assert utt.reason == "idle"
        assert abs(utt.speech_end_ns - (BASE_NS + (at_ms + ms) * MS)) <= 100 * MS  # webrtc hangs over by a frame or two
