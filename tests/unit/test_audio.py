import numpy as np
import pytest

from glyphoxa_audio.jitter import PlaybackBuffer
from glyphoxa_audio.opus import OpusDecoder, OpusEncoder, OpusError, frames_of
from glyphoxa_audio.wav import read_wav, resample, write_wav

pytestmark = pytest.mark.unit


def tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 10000).astype(np.int16)


def dominant_freq(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64)))
    return float(np.argmax(spectrum) * rate / len(x))


def test_discord_stereo_decodes_straight_to_16k_mono():
    enc, dec = OpusEncoder(48000, 2), OpusDecoder(16000, 1)
    pcm = tone(440, 1.0, 48000)
    out = np.concatenate([dec.decode(enc.encode(np.stack([f, f], 1))) for f in frames_of(pcm, 960)])
    assert len(out) == 16000  # 50 frames x 320 samples
    assert abs(dominant_freq(out[1600:], 16000) - 440) < 5


def test_corrupt_and_oversized_packets_are_clear_errors():
    dec = OpusDecoder(16000, 1)
    with pytest.raises(OpusError, match="corrupt"):
        dec.decode(b"\xff\xff\xff\xff\x00junk")
    with pytest.raises(OpusError, match="larger"):
        dec.decode(b"\x00" * 5000)
    with pytest.raises(OpusError, match="empty"):
        dec.decode(b"")
    with pytest.raises(ValueError):
        OpusDecoder(44100, 1)


def test_wav_round_trip_and_resample(tmp_path):
    pcm = tone(300, 0.5, 22050)
    write_wav(tmp_path / "a.wav", pcm, 22050)
    back, rate = read_wav(tmp_path / "a.wav")
    assert rate == 22050 and np.array_equal(back, pcm)
    up = resample(pcm, 22050, 48000)
    assert abs(len(up) - 24000) <= 2
    assert abs(dominant_freq(up, 48000) - 300) < 5


def test_jitter_buffer_reorders_and_skips_a_lost_frame():
    buf = PlaybackBuffer(max_wait=2)
    for seq in (1, 0, 3, 4):  # 2 is lost
        buf.push("t1", "greta", seq, bytes([seq]))
    got = [buf.pop() for _ in range(3)]
    assert [f.seq for f in got[:2]] == [0, 1]
    assert got[2] is None  # waits for 2 ...
    assert buf.pop() is None
    lost = buf.pop()  # ... then gives up on it
    assert lost.seq == 2 and lost.packet is None and buf.skipped == 1
    assert [buf.pop().seq, buf.pop().seq] == [3, 4]


def test_jitter_buffer_plays_turns_in_order_and_flushes():
    buf = PlaybackBuffer()
    for seq in range(3):
        buf.push("t1", "greta", seq, b"a")
    buf.push("t2", "aldric", 0, b"b")
    buf.end("t1", 3)
    assert [buf.pop().turn_id for _ in range(4)] == ["t1", "t1", "t1", "t2"]
    buf.push("t3", "greta", 0, b"c")
    assert buf.flush("t3") == 1
    buf.push("t3", "greta", 1, b"c")  # late frames of a flushed turn are ignored
    assert buf.pop() is None and len(buf) == 0


def test_jitter_buffer_is_bounded():
    buf = PlaybackBuffer(max_frames=10)
    for seq in range(25):
        buf.push("t1", "greta", seq, b"x")
    assert len(buf) == 10 and buf.dropped == 15
    assert buf.pop().seq == 15
