"""The Smart Turn model: our feature extraction on known signals, the pinned model file, and
the real model on real (synthetic) speech from tests/data/paused_lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from glyphoxa_audio.wav import read_wav
from glyphoxa_runtime.providers import ProviderUnavailable
from glyphoxa_vad.smart_turn import (
    FRAMES,
    MODEL_FILE,
    MODEL_SHA256,
    N_MELS,
    SmartTurn,
    _slaney_hz,
    features,
    file_sha256,
    mel_filterbank,
)

pytestmark = pytest.mark.unit

PAUSED = Path(__file__).resolve().parents[2] / "data" / "paused_lines"
RATE = 16_000


def sine(hz: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_digital_silence_is_the_floor_everywhere() -> None:
    # zero audio stays zero after normalisation: every band is log10(1e-10) = -10 -> -1.5
    f = features(np.zeros(RATE, dtype=np.int16))
    assert f.shape == (N_MELS, FRAMES) and f.dtype == np.float32
    assert np.all(f == np.float32(-1.5))


def test_a_tone_lights_the_band_of_its_frequency_and_the_range_is_clamped() -> None:
    f = features(sine(1000.0, 8.0))
    centres = _slaney_hz(np.linspace(0, 45.245, N_MELS + 2))[1:-1]  # mel(8 kHz) on this scale
    loudest = np.argmax(f[:, 100:700], axis=0)
    assert np.all(loudest == loudest[0])
    assert abs(centres[loudest[0]] - 1000.0) < 60.0
    # clamped to 8 decades below the maximum, then (x + 4) / 4: a range of exactly 2
    assert f.max() - f.min() == pytest.approx(2.0, abs=1e-5)
    # a steady tone gives the same spectrum in every frame away from the edges
    np.testing.assert_allclose(f[:, 200], f[:, 600], atol=1e-4)


def test_short_audio_is_padded_before_it_and_long_audio_keeps_its_end() -> None:
    f = features(sine(500.0, 1.0))
    # 1 s of tone = the last 100 frames; everything before is the (zero) padding's floor
    assert np.all(f[:, :690] == f[0, 0])
    assert f[:, 720:].max() > f[0, 0] + 1.0
    long = np.concatenate((sine(3000.0, 4.0), sine(500.0, 8.0)))
    np.testing.assert_allclose(features(long), features(sine(500.0, 8.0)), atol=1e-5)
    with pytest.raises(ValueError, match="mono"):
        features(np.zeros((2, 100), dtype=np.int16))


def test_mel_filterbank_is_80_unit_area_triangles() -> None:
    bank = mel_filterbank()
    assert bank.shape == (N_MELS, 201) and np.all(bank >= 0)
    peaks = np.argmax(bank, axis=1)
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] > 190
    # every filter covers some bins
    assert np.all(bank.sum(axis=1) > 0)


def test_the_carried_model_file_matches_its_pin() -> None:
    assert file_sha256(MODEL_FILE) == MODEL_SHA256
    assert (MODEL_FILE.parent / "LICENSE.smart-turn").read_text().startswith("BSD 2-Clause")
    assert MODEL_SHA256 in (MODEL_FILE.parent / "SOURCE.md").read_text()


def test_a_missing_or_altered_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProviderUnavailable, match="not found"):
        SmartTurn(path=tmp_path / "nope.onnx")
    altered = tmp_path / "smart-turn.onnx"
    shutil.copyfile(MODEL_FILE, altered)
    with altered.open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ProviderUnavailable, match="sha256"):
        SmartTurn(path=altered)


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    return SmartTurn()


def paused_line(name: str) -> tuple[np.ndarray, dict]:
    record = next(r for r in json.loads((PAUSED / "lines.json").read_text()) if r["file"] == name)
    pcm, rate = read_wav(PAUSED / name)
    assert rate == RATE
    return pcm, record


def upto(pcm: np.ndarray, seconds: float) -> np.ndarray:
    return pcm[: int(seconds * RATE)]


def test_the_model_hears_a_finished_sentence_and_a_cut_off_one(model: SmartTurn) -> None:
    finished, cut = [], []
    for name in ("line_02.wav", "line_09.wav", "line_12.wav"):
        pcm, r = paused_line(name)
        finished.append(model.probability(upto(pcm, r["speech_end_s"] + 0.3)))
    for name in ("line_08.wav", "line_10.wav", "line_11.wav"):
        # "So the key opens the door in", "Let's ask the innkeeper about the", ...
        pcm, r = paused_line(name)
        cut.append(model.probability(upto(pcm, r["pause_start_s"] + 0.2)))
    assert min(finished) > 0.8, finished
    assert max(cut) < 0.3, cut


async def test_the_model_runs_off_the_event_loop(model: SmartTurn) -> None:
    pcm, r = paused_line("line_12.wav")
    audio = upto(pcm, r["speech_end_s"] + 0.3)
    assert await model.probability_async(audio) == pytest.approx(model.probability(audio))
