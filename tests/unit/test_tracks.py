"""Rebuilding speaker tracks from recorded opus frames (glyphoxa_cli.tracks), with real
libopus: pauses, reordering, packet loss, duplicates and a speaker who joins late."""

from __future__ import annotations

import random

import numpy as np
import pytest

from glyphoxa_audio.opus import SILENCE_FRAME, OpusEncoder
from glyphoxa_audio.wav import to_stereo
from glyphoxa_cli.tracks import FRAME, FRAME_NS, RATE, RecordedFrame, rebuild

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000_000_000  # a session's first capture time (unix ns)


def tone_frames(speaker: str, start_s: float, seconds: float, hz: float = 440.0,
                encoder: OpusEncoder | None = None) -> list[RecordedFrame]:
    """A speaker's frames of a tone, as an edge publishes them: ``Glx-Seq`` is the capture
    time counted in 20 ms frames."""
    encoder = encoder or OpusEncoder()
    n = round(seconds * 50)
    t = np.arange(n * FRAME) / RATE
    pcm = (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    first = T0 + round(start_s * 1e9)
    return [RecordedFrame(speaker, (first + i * FRAME_NS) // FRAME_NS, first + i * FRAME_NS,
                          encoder.encode(to_stereo(pcm[i * FRAME:(i + 1) * FRAME])))
            for i in range(n)]


def rms(pcm: np.ndarray, start_s: float, end_s: float) -> float:
    part = pcm[int(start_s * RATE):int(end_s * RATE)].astype(np.float64)
    return float(np.sqrt(np.mean(part ** 2))) if len(part) else 0.0


def test_continuous_speech_is_placed_from_its_capture_time():
    tracks = rebuild(tone_frames("robin", 0.5, 1.0), origin_ns=T0)
    pcm = tracks.pcm["robin"]
    assert len(pcm) == int(1.5 * RATE)
    assert rms(pcm, 0.0, 0.5) == 0.0
    assert rms(pcm, 0.6, 1.4) > 4000  # the tone's rms is 8000 / sqrt(2)
    report = tracks.reports["robin"]
    assert report.frames == 50 and report.concealed == report.pauses == report.duplicates == 0


def test_a_pause_is_silence_and_the_next_words_start_at_their_capture_time():
    encoder = OpusEncoder()
    first = tone_frames("robin", 0.0, 0.5, encoder=encoder)
    trailing = [RecordedFrame("robin", first[-1].seq + 1 + i, first[-1].capture_ns + (i + 1) * FRAME_NS,
                              SILENCE_FRAME) for i in range(5)]  # Discord's five silence frames
    second = tone_frames("robin", 3.0, 0.5, encoder=encoder)
    tracks = rebuild(first + trailing + second, origin_ns=T0)
    pcm = tracks.pcm["robin"]
    assert tracks.reports["robin"].pauses == 1 and tracks.reports["robin"].concealed == 0
    assert rms(pcm, 0.7, 2.95) < 50  # the pause: silence
    assert rms(pcm, 3.05, 3.45) > 4000  # placed at 3.0 s, not right after the first words
    assert len(pcm) == int(3.5 * RATE)


def test_frames_out_of_order_give_the_same_track_as_in_order():
    frames = tone_frames("casey", 0.0, 1.0)
    shuffled = frames[:]
    random.Random(7).shuffle(shuffled)
    in_order, out_of_order = rebuild(frames, origin_ns=T0), rebuild(shuffled, origin_ns=T0)
    assert np.array_equal(in_order.pcm["casey"], out_of_order.pcm["casey"])
    assert out_of_order.reports["casey"].reordered > 0


def test_lost_packets_are_concealed_and_the_timeline_does_not_shift():
    frames = tone_frames("drew", 0.0, 1.0)
    lossy = frames[:20] + frames[23:]  # three frames lost in the middle
    full, lost = rebuild(frames, origin_ns=T0).pcm["drew"], rebuild(lossy, origin_ns=T0)
    assert lost.reports["drew"].concealed == 3 and lost.reports["drew"].pauses == 0
    pcm = lost.pcm["drew"]
    assert len(pcm) == len(full)  # the frames after the hole keep their place
    hole = slice(20 * FRAME, 23 * FRAME)
    assert rms(pcm[hole], 0, 1) > 1000  # concealment carries the tone on, not a click of silence
    after = slice(30 * FRAME, 45 * FRAME)  # once the decoder has recovered: the same audio
    assert np.corrcoef(pcm[after].astype(float), full[after].astype(float))[0, 1] > 0.95


def test_a_corrupt_packet_is_concealed():
    frames = tone_frames("drew", 0.0, 0.4)
    bad = RecordedFrame("drew", frames[10].seq, frames[10].capture_ns, b"\xff" * 7)
    tracks = rebuild(frames[:10] + [bad] + frames[11:], origin_ns=T0)
    assert tracks.reports["drew"].concealed == 1
    assert len(tracks.pcm["drew"]) == 20 * FRAME


def test_duplicates_are_played_once():
    frames = tone_frames("robin", 0.0, 0.6)
    twice = frames[:15] + frames[5:15] + frames[15:] + frames[-3:]
    once, dup = rebuild(frames, origin_ns=T0), rebuild(twice, origin_ns=T0)
    assert dup.reports["robin"].duplicates == 13
    assert np.array_equal(once.pcm["robin"], dup.pcm["robin"])


def test_a_speaker_who_joins_late_is_silent_until_then_and_tracks_share_one_timeline():
    frames = tone_frames("robin", 0.0, 1.0, hz=300) + tone_frames("casey", 10.0, 1.0, hz=600)
    tracks = rebuild(frames)  # origin: the first frame of anyone
    assert tracks.origin_ns == T0
    robin, casey = tracks.pcm["robin"], tracks.pcm["casey"]
    assert len(robin) == len(casey) == 11 * RATE  # padded to the longest
    assert rms(casey, 0.0, 9.99) == 0.0 and rms(casey, 10.05, 10.95) > 4000
    assert rms(robin, 0.05, 0.95) > 4000 and rms(robin, 1.05, 11.0) == 0.0
    assert tracks.reports["casey"].first_capture_ns == T0 + 10 * 1_000_000_000
    assert tracks.duration_s == pytest.approx(11.0)


def test_frames_before_the_origin_are_dropped():
    frames = tone_frames("robin", 0.0, 1.0)
    tracks = rebuild(frames, origin_ns=T0 + 500_000_000)
    assert tracks.reports["robin"].before_origin == 25
    assert len(tracks.pcm["robin"]) == int(0.5 * RATE)


def test_no_frames_no_tracks():
    tracks = rebuild([])
    assert tracks.pcm == {} and tracks.duration_s == 0.0
