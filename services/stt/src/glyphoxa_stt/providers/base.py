"""The speech-to-text provider interface.

The base class owns what every provider needs the same way: input checks, the timeout,
retries of retryable errors, metrics, and mapping stray exceptions to ``ProviderError``.
A provider implements ``_transcribe_impl`` and declares its ``capabilities``; its vendor
SDK is imported only in its own module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from glyphoxa_runtime.providers import ProviderError, ProviderTimeout
from glyphoxa_stt import metrics

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
"""Every provider receives PCM16 mono at this rate (what vad publishes)."""


@dataclass(frozen=True)
class SttCapabilities:
    streaming: bool = False
    """Accepts audio while the utterance is still going (and may emit partials)."""
    prompt: bool = False
    """Uses a text prompt (campaign proper nouns) to bias recognition."""
    languages: tuple[str, ...] = ()
    """Languages it can transcribe; empty means any."""


@dataclass(frozen=True)
class SttResult:
    text: str
    audio_seconds: float
    provider: str
    suppressed: str = ""
    """Why a hypothesis was dropped (``silence``, ``no_speech``, ``hallucination``), else empty."""


@dataclass(frozen=True)
class SttHints:
    """What a session tells its recognizer about the speech to expect."""

    language: str = "en"
    prompt: str | None = None
    """Free text priming the names (Whisper's initial prompt)."""
    keyterms: tuple[str, ...] = ()
    """Proper nouns to boost (Deepgram keyterms): the campaign's NPC names and aliases."""


PartialHook = Callable[[str], Awaitable[None]]
"""Called with each interim hypothesis of a streaming utterance (the whole text so far)."""

EndpointHook = Callable[[str], Awaitable[None]]
"""Called when a streaming provider hears the speaker stop (Deepgram's ``speech_final``),
with the finalized text so far: the stage may treat it as the utterance's final at once."""


class SttStream(ABC):
    """One utterance being recognised while it is spoken (a provider with ``streaming``).

    ``send`` is called with each chunk of PCM16 mono 16 kHz audio as it arrives, then
    ``finish`` once vad has ended the utterance: it returns the final result. ``abort``
    drops the stream without a result (the utterance was abandoned). A stream that fails
    raises ``ProviderError`` from any of these; the stage then transcribes the buffered
    audio another way, so a stream never has to retry on its own.
    """

    @abstractmethod
    async def send(self, pcm: bytes) -> None: ...

    @abstractmethod
    async def finish(self) -> SttResult: ...

    @abstractmethod
    async def abort(self) -> None: ...


class SttProvider(ABC):
    name: ClassVar[str]
    capabilities: ClassVar[SttCapabilities]

    def __init__(self, *, timeout_s: float = 30.0, retries: int = 1, retry_backoff_s: float = 0.25):
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = retry_backoff_s

    async def start(self) -> None:
        """Load models or open clients; called once per process before any session."""

    async def close(self) -> None:
        """Release what ``start`` acquired."""

    def for_session(self) -> SttProvider:
        """The provider one session uses; stateless providers share themselves."""
        return self

    @property
    def usable(self) -> bool:
        """False for a cloud provider made without an API key (waiting for tenants' own):
        the stage skips it rather than have it refuse every line."""
        return True

    async def open_stream(self, hints: SttHints, on_partial: PartialHook | None = None,
                          on_endpoint: EndpointHook | None = None) -> SttStream:
        """Start recognising one utterance as it is spoken (only if ``capabilities.streaming``).

        Raises ``ProviderError`` when the stream cannot be opened."""
        raise ProviderError(self.name, "does not stream")

    async def transcribe(
        self, audio: np.ndarray, *, prompt: str | None = None, language: str = "en",
        keyterms: tuple[str, ...] = (),
    ) -> SttResult:
        """Transcribe one utterance: ``audio`` is int16 PCM, mono, 16 kHz."""
        audio = _as_pcm16(audio)
        self._check_language(language)
        if not self.capabilities.prompt:
            prompt = None
        attempt = 0
        while True:
            try:
                return await self._attempt(audio, prompt, language, keyterms)
            except ProviderError as exc:
                metrics.PROVIDER_ERRORS.labels(self.name, str(exc.retryable).lower()).inc()
                if not exc.retryable or attempt >= self._retries:
                    raise
                attempt += 1
                log.warning("transcription failed, retrying: %s", exc,
                            extra={"provider": self.name, "attempt": attempt})
                await asyncio.sleep(self._backoff_s * attempt)

    async def _attempt(
        self, audio: np.ndarray, prompt: str | None, language: str, keyterms: tuple[str, ...]
    ) -> SttResult:
        started = time.perf_counter()
        try:
            # a timeout scope, not wait_for: on Python 3.11 wait_for is a task and two turns of
            # the event loop on every transcription, on the way of every turn
            async with asyncio.timeout(self._timeout_s):
                result = await self._transcribe_impl(audio, prompt=prompt, language=language,
                                                     keyterms=keyterms)
        except TimeoutError:
            raise ProviderTimeout(self.name, self._timeout_s) from None
        except (ProviderError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise ProviderError(self.name, f"{type(exc).__name__}: {exc}") from exc
        elapsed = time.perf_counter() - started
        seconds = len(audio) / SAMPLE_RATE
        metrics.TRANSCRIBE_SECONDS.labels(self.name).observe(elapsed)
        metrics.AUDIO_SECONDS.labels(self.name).inc(seconds)
        if seconds > 0:
            metrics.REAL_TIME_FACTOR.labels(self.name).observe(elapsed / seconds)
        return result

    def _check_language(self, language: str) -> None:
        supported = self.capabilities.languages
        if supported and language not in supported:
            raise ProviderError(self.name, f"language {language!r} not supported ({supported})")

    @abstractmethod
    async def _transcribe_impl(
        self, audio: np.ndarray, *, prompt: str | None, language: str, keyterms: tuple[str, ...]
    ) -> SttResult: ...


def _as_pcm16(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.dtype != np.int16 or audio.ndim != 1:
        raise ValueError(f"expected 1-D int16 PCM, got {audio.dtype} with shape {audio.shape}")
    return audio
