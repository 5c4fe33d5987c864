"""WAV I/O (PCM16) and resampling (soxr: high quality, fast, no Python loops)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import soxr


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Returns (int16 samples shaped (n,) for mono or (n, channels), sample rate)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        channels, rate = w.getnchannels(), w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return (data.reshape(-1, channels) if channels > 1 else data), rate


def write_wav(path: str | Path, pcm: np.ndarray, rate: int) -> None:
    pcm = np.asarray(pcm, dtype=np.int16)
    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def resample(pcm: np.ndarray, from_rate: float, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return np.asarray(pcm, dtype=np.int16)
    out = soxr.resample(np.asarray(pcm, dtype=np.int16), from_rate, to_rate, quality="HQ")
    return np.asarray(out, dtype=np.int16)


def to_mono(pcm: np.ndarray) -> np.ndarray:
    if pcm.ndim == 1:
        return pcm
    return pcm.mean(axis=1).astype(np.int16)


def to_stereo(pcm: np.ndarray) -> np.ndarray:
    if pcm.ndim == 2:
        return pcm
    return np.repeat(pcm[:, None], 2, axis=1)


def pcm16_to_float(pcm: np.ndarray) -> np.ndarray:
    return np.asarray(pcm, dtype=np.float32) / 32768.0
