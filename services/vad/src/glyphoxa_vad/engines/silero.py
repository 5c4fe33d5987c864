"""Silero VAD (v5/v6 ONNX) on onnxruntime, without torch.

The model file ships inside the ``silero-vad`` package, whose ``__init__`` imports torch;
the file is located through the package's search path so that ``__init__`` never runs.
The model takes 512 new samples at 16 kHz plus the 64 samples before them (its context)
and a recurrent state of shape (2, 1, 128).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from glyphoxa_runtime.providers import ProviderError, ProviderUnavailable
from glyphoxa_vad.engines import SAMPLE_RATE, VadEngine, VadStream

CHUNK = 512
CONTEXT = 64
MODEL_FILE = "silero_vad.onnx"


def model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ProviderUnavailable("silero", "the silero-vad package is not installed")
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / MODEL_FILE
        if path.is_file():
            return path
    raise ProviderUnavailable("silero", f"{MODEL_FILE} not found in the silero-vad package")


class SileroEngine(VadEngine):
    """One onnxruntime session per process, shared by every speaker's stream."""

    name = "silero"

    def __init__(self, threads: int = 1, path: Path | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path or model_path()), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ProviderUnavailable("silero", f"cannot load the model: {exc}") from None
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ProviderUnavailable("silero", f"unexpected model inputs {sorted(names)}")
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def stream(self) -> VadStream:
        return SileroStream(self)

    def run(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        try:
            prob, new_state = self._session.run(
                None, {"input": window, "state": state, "sr": self._sr})
        except Exception as exc:  # noqa: BLE001
            raise ProviderError("silero", f"inference failed: {exc}") from None
        return float(prob[0, 0]), new_state


class SileroStream(VadStream):
    engine = "silero"
    chunk_samples = CHUNK

    def __init__(self, model: SileroEngine):
        self._model = model
        self._window = np.zeros((1, CONTEXT + CHUNK), dtype=np.float32)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)

    def _probability_impl(self, chunk: np.ndarray) -> float:
        # the window is [previous 64 samples | this chunk]: shift the context in, then the chunk
        self._window[0, :CONTEXT] = self._window[0, -CONTEXT:]
        self._window[0, CONTEXT:] = chunk.astype(np.float32) / 32768.0
        prob, self._state = self._model.run(self._window, self._state)
        return prob

    def reset(self) -> None:
        self._window[:] = 0.0
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
