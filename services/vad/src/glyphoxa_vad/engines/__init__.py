"""VAD engines behind one interface.

An engine is loaded once per process (``VadEngine``, e.g. one ONNX session); every speaker
gets its own ``VadStream`` holding that speaker's model state. A stream classifies fixed
chunks of 16 kHz mono PCM16 and returns a speech probability in [0, 1].

Vendor libraries are imported only inside their engine's module, and their errors are
mapped to ``glyphoxa_runtime.providers`` errors.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from functools import cache

import numpy as np

from glyphoxa_vad import metrics

SAMPLE_RATE = 16_000


class VadStream(ABC):
    """One speaker's view of an engine: a stateful classifier of consecutive chunks."""

    engine: str = "?"
    chunk_samples: int

    def probability(self, chunk: np.ndarray) -> float:
        """Speech probability of the next ``chunk_samples`` int16 samples."""
        if chunk.shape != (self.chunk_samples,):
            raise ValueError(f"{self.engine} expects chunks of {self.chunk_samples} samples")
        started = time.perf_counter()
        try:
            return self._probability_impl(chunk)
        finally:
            _inference_timer(self.engine).observe(time.perf_counter() - started)

    @abstractmethod
    def _probability_impl(self, chunk: np.ndarray) -> float: ...

    @abstractmethod
    def reset(self) -> None:
        """Forget everything heard so far (start of a talk spurt)."""


@cache
def _inference_timer(engine: str):  # type: ignore[no-untyped-def]
    return metrics.INFERENCE_SECONDS.labels(engine=engine)


class VadEngine(ABC):
    name: str

    @abstractmethod
    def stream(self) -> VadStream: ...


def build_engine(name: str, *, threads: int = 1, aggressiveness: int = 2,
                 frame_ms: int = 30) -> VadEngine:
    """The configured engine; raises ``ProviderUnavailable`` when it cannot be loaded."""
    if name == "silero":
        from glyphoxa_vad.engines.silero import SileroEngine

        return SileroEngine(threads=threads)
    if name == "webrtc":
        from glyphoxa_vad.engines.webrtc import WebRtcEngine

        return WebRtcEngine(aggressiveness=aggressiveness, frame_ms=frame_ms)
    raise ValueError(f"unknown VAD engine {name!r}")
