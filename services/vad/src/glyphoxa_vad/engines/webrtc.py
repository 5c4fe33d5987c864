"""webrtcvad: the light engine (no model file, microseconds per frame, but it calls any
loud sound speech). Its answer is a yes/no, reported as probability 1.0 or 0.0."""

from __future__ import annotations

import numpy as np

from glyphoxa_runtime.providers import ProviderUnavailable
from glyphoxa_vad.engines import SAMPLE_RATE, VadEngine, VadStream


class WebRtcEngine(VadEngine):
    name = "webrtc"

    def __init__(self, aggressiveness: int = 2, frame_ms: int = 30):
        try:
            import webrtcvad
        except ImportError as exc:
            raise ProviderUnavailable("webrtc", f"webrtcvad is not installed: {exc}") from None
        if frame_ms not in (10, 20, 30):
            raise ValueError("webrtcvad frames are 10, 20 or 30 ms")
        if not 0 <= aggressiveness <= 3:
            raise ValueError("webrtcvad aggressiveness is 0..3")
        self._vad_class = webrtcvad.Vad
        self.aggressiveness = aggressiveness
        self.frame_samples = SAMPLE_RATE * frame_ms // 1000

    def stream(self) -> VadStream:
        return WebRtcStream(self)

    def new_vad(self) -> object:
        return self._vad_class(self.aggressiveness)


class WebRtcStream(VadStream):
    engine = "webrtc"

    def __init__(self, engine: WebRtcEngine):
        self._engine = engine
        self.chunk_samples = engine.frame_samples
        self._vad = engine.new_vad()

    def _probability_impl(self, chunk: np.ndarray) -> float:
        data = np.ascontiguousarray(chunk, dtype=np.int16).tobytes()
        return 1.0 if self._vad.is_speech(data, SAMPLE_RATE) else 0.0  # type: ignore[attr-defined]

    def reset(self) -> None:
        self._vad = self._engine.new_vad()  # its noise estimates live in the C object
