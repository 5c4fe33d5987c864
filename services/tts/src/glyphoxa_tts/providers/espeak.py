"""espeak-ng through ctypes (libespeak-ng from the espeakng-loader wheel).

The zero-size fallback: robotic but tiny, instant and always there. libespeak-ng is one
global synthesizer per process (voice, parameters and callback are global state), so every
use goes through one lock.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import AsyncIterator, Iterator

import numpy as np

from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_runtime.providers import ProviderError, ProviderUnavailable
from glyphoxa_tts.providers.base import TTSCapabilities, TTSProvider

log = logging.getLogger(__name__)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
_MIN_RATE, _MAX_RATE = 80, 450
FALLBACK_VOICE = "en-us"

# espeak-ng's pitch parameter (0-100, default 50) against the measured factor of the
# fundamental frequency it gives (en-us: 73 Hz at 0, 98 Hz at 50, 165 Hz at 100).
_PITCH_PARAMS = np.array([0, 10, 25, 40, 50, 60, 75, 90, 100])
_PITCH_FACTORS = np.array([0.752, 0.785, 0.824, 0.926, 1.0, 1.10, 1.29, 1.53, 1.69])


def pitch_parameter(factor: float) -> int:
    """The espeak-ng pitch parameter that moves the voice's pitch by ``factor``."""
    return round(float(np.interp(np.log(factor), np.log(_PITCH_FACTORS), _PITCH_PARAMS)))


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p),
                ("identifier", ctypes.c_char_p), ("gender", ctypes.c_ubyte),
                ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte), ("xx1", ctypes.c_ubyte),
                ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _LibEspeak:
    """The process-wide libespeak-ng, initialized once; use only while holding ``lock``."""

    lock = threading.Lock()
    _instance: _LibEspeak | None = None

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        data = espeakng_loader.get_data_path().encode()
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data,
                                                 _INITIALIZE_DONT_EXIT)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sample_rate})")
        self._lib = lib
        self._sink: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._voice = ""

    @classmethod
    def get(cls) -> _LibEspeak:
        with cls.lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav: object, count: int, events: object) -> int:
        if wav and count > 0:
            self._sink.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def set_voice(self, name: str) -> None:
        """By voice name ("en-us", "en-us+f3"), else by language with the variant kept
        ("en-gb+m3" -> the en-gb voice, variant m3), else en-us."""
        if name == self._voice:
            return
        if self._lib.espeak_SetVoiceByName(name.encode()) != _EE_OK and not self._by_language(name):
            log.warning("espeak-ng has no voice %r; using %s", name, FALLBACK_VOICE)
            if self._lib.espeak_SetVoiceByName(FALLBACK_VOICE.encode()) != _EE_OK:
                raise RuntimeError(f"espeak-ng cannot set voice {FALLBACK_VOICE}")
        self._voice = name

    def _by_language(self, name: str) -> bool:
        language, _, variant = name.partition("+")
        wanted = _Voice(languages=language.lower().encode())
        if self._lib.espeak_SetVoiceByProperties(ctypes.byref(wanted)) != _EE_OK:
            return False
        if not variant:
            return True
        chosen = self._lib.espeak_GetCurrentVoice()
        identifier = chosen.contents.identifier if chosen else None
        return bool(identifier) and self._lib.espeak_SetVoiceByName(
            identifier + b"+" + variant.encode()) == _EE_OK

    def speak(self, text: str, voice: str, rate: int, pitch: int = 50) -> np.ndarray:
        """Whole-text synthesis (synchronous mode); caller holds ``lock``."""
        self.set_voice(voice)
        self._lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        self._lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        data = text.encode("utf-8")
        self._sink = []
        result = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0,
                                        _CHARS_UTF8, None, None)
        if result != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed ({result})")
        pieces, self._sink = self._sink, []
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)


class EspeakProvider(TTSProvider):
    name = "espeak"

    def __init__(self, timeout_s: float = 30.0, max_parallel: int = 1):
        try:
            self._lib = _LibEspeak.get()
        except Exception as exc:
            raise ProviderUnavailable("espeak", f"cannot load libespeak-ng: {exc}") from exc
        super().__init__(TTSCapabilities(sample_rate=self._lib.sample_rate, streaming=False),
                         timeout_s=timeout_s, max_parallel=max_parallel)

    def native_pitch(self, pitch: float) -> float:
        """espeak-ng moves the pitch itself (formants stay put) within about 0.75x-1.69x."""
        return float(np.clip(pitch, _PITCH_FACTORS[0], _PITCH_FACTORS[-1]))

    def _synthesize_impl(self, text: str, voice: VoiceSpec, pitch: float, tempo: float
                         ) -> AsyncIterator[np.ndarray]:
        rate = round(min(max(voice.rate / tempo, _MIN_RATE), _MAX_RATE))
        param = pitch_parameter(pitch)
        return self._in_thread(lambda: self._speak(text, voice.espeak_voice, rate, param))

    def _speak(self, text: str, voice: str, rate: int, pitch: int) -> Iterator[np.ndarray]:
        try:
            with _LibEspeak.lock:
                audio = self._lib.speak(text, voice, rate, pitch)
        except Exception as exc:
            raise ProviderError(self.name, str(exc)) from exc
        if len(audio):
            yield audio
