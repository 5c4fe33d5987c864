"""End of turn from the audio: Pipecat's Smart Turn v3.2 model on onnxruntime.

The model (``models/smart-turn-v3.2-cpu.onnx``, BSD-2-Clause, see ``models/SOURCE.md``)
reads the last 8 s of an utterance as an 80 x 800 Whisper-style log-mel spectrogram and
answers the probability that the speaker has finished their turn. The features are computed
here with numpy (no torch, no transformers):

- the 16 kHz audio is cut to its last 8 s, or zero-padded *before* its start to 8 s;
- the 128 000 samples are normalised to zero mean and unit variance;
- a centred STFT (reflect padding of 200, periodic Hann window of 400, hop 160) gives 801
  power spectra; the last frame is dropped;
- an 80-band Slaney-scale mel filterbank (0-8 kHz, area-normalised), log10 with a floor of
  1e-10, clamped to 8 below the maximum, then ``(x + 4) / 4``.

One process holds one ``SmartTurn``: one onnxruntime session of one intra-op thread that
sleeps when idle, run in a worker thread of its own so that vad's event loop (which serves
many sessions) never waits for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from glyphoxa_runtime.providers import ProviderError, ProviderUnavailable
from glyphoxa_vad import metrics

SAMPLE_RATE = 16_000
WINDOW_S = 8
WINDOW_SAMPLES = SAMPLE_RATE * WINDOW_S
N_FFT = 400
HOP = 160
N_MELS = 80
FRAMES = WINDOW_SAMPLES // HOP  # 800
MODEL_FILE = Path(__file__).parent / "models" / "smart-turn-v3.2-cpu.onnx"
MODEL_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"


def _slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Hz -> mel on the Slaney scale: linear (3 mel per 200 Hz) up to 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz >= 1000.0, log, linear)


def _slaney_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log = 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0))
    return np.where(mel >= 15.0, log, linear)


def mel_filterbank() -> np.ndarray:
    """(80, 201) triangular filters over the rFFT bins, each scaled to unit area."""
    bins = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _slaney_hz(np.linspace(_slaney_mel(0.0), _slaney_mel(SAMPLE_RATE / 2), N_MELS + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    triangles = np.clip(np.minimum(rising, falling), 0.0, None)
    return triangles * (2.0 / (upper - lower))


_MEL = mel_filterbank()
_HANN = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic
_FRAME_INDEX = np.arange(FRAMES + 1)[:, None] * HOP + np.arange(N_FFT)[None, :]


def features(pcm: np.ndarray) -> np.ndarray:
    """16 kHz mono audio (int16, or float in [-1, 1]) -> float32 [80, 800] model input."""
    x = np.asarray(pcm)
    if x.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {x.shape}")
    x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
    if len(x) >= WINDOW_SAMPLES:
        x = x[-WINDOW_SAMPLES:]
    else:
        x = np.concatenate((np.zeros(WINDOW_SAMPLES - len(x), dtype=np.float32), x))
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    spectrum = np.fft.rfft(padded[_FRAME_INDEX] * _HANN, axis=1)  # (801, 201)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    mel = np.log10(np.maximum(_MEL @ power.T, 1e-10))[:, :FRAMES]
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SmartTurn:
    """The loaded model; raises ``ProviderUnavailable`` when the file is missing, altered
    or not the expected model."""

    name = "smart_turn"

    def __init__(self, path: Path | None = None, threads: int = 1, spin: bool = False,
                 sha256: str = MODEL_SHA256):
        import onnxruntime as ort

        path = path or MODEL_FILE
        if not path.is_file():
            raise ProviderUnavailable(self.name, f"model file {path} not found")
        digest = file_sha256(path)
        if digest != sha256:
            raise ProviderUnavailable(
                self.name, f"model file {path} has sha256 {digest}, expected {sha256}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ProviderUnavailable(self.name, f"cannot load the model: {exc}") from None
        inputs = self._session.get_inputs()
        if [(i.name, i.shape[1:]) for i in inputs] != [("input_features", [N_MELS, FRAMES])]:
            raise ProviderUnavailable(self.name, f"unexpected model inputs {inputs}")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="smart-turn")

    def probability(self, pcm: np.ndarray) -> float:
        """P(turn finished) for an utterance's audio so far (blocking: ~120 ms of one core on the development VM)."""
        started = time.perf_counter()
        try:
            out = self._session.run(None, {"input_features": features(pcm)[None]})
        except Exception as exc:  # noqa: BLE001
            raise ProviderError(self.name, f"inference failed: {exc}") from None
        finally:
            metrics.TURN_MODEL_SECONDS.observe(time.perf_counter() - started)
        return float(np.clip(np.asarray(out[0]).reshape(-1)[0], 0.0, 1.0))

    async def probability_async(self, pcm: np.ndarray) -> float:
        """``probability`` in the model's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self.probability, pcm)

    def close(self) -> None:
        self._executor.shutdown(wait=False)
