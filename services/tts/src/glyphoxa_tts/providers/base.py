"""The tts provider interface: the base class owns timeouts, metrics, pitch and resampling.

A provider implements ``_synthesize_impl`` (text -> int16 mono chunks at its native rate)
and declares its ``TTSCapabilities``. Callers use ``synthesize``, which always yields int16
mono chunks at 48 kHz.

Pitch: a provider that can move the pitch itself (espeak-ng's pitch parameter keeps the
formants where they are, which sounds more natural) says how much of it it does in
``native_pitch``. The rest is done the same way for every provider, with one resampling
pass: the provider speaks ``tempo = rest`` times slower, and the samples are then read as if
they had been recorded at ``native_rate * rest``. Resampling that to 48 kHz raises every
frequency by ``rest`` and shortens the audio by the same factor, so the duration ends up
unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import soxr

from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_runtime.providers import ProviderError, ProviderTimeout
from glyphoxa_tts import metrics

log = logging.getLogger(__name__)

OUTPUT_RATE = 48_000
_DONE = object()


@dataclass(frozen=True)
class TTSCapabilities:
    sample_rate: int
    """Native sample rate of the chunks ``_synthesize_impl`` yields."""
    streaming: bool
    """Yields audio before the whole text is synthesized (e.g. sentence by sentence)."""


class TTSProvider(ABC):
    """Base of every tts provider."""

    name: str = "base"

    def __init__(self, capabilities: TTSCapabilities, timeout_s: float = 30.0,
                 max_parallel: int = 2):
        self.capabilities = capabilities
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_parallel, thread_name_prefix=f"tts-{self.name}")

    async def synthesize(self, text: str, voice: VoiceSpec) -> AsyncIterator[np.ndarray]:
        """Speak ``text`` in ``voice``: int16 mono chunks at 48 kHz, as they become ready.

        Raises ``ProviderError`` (``ProviderTimeout`` when a chunk takes longer than
        ``timeout_s``); no vendor exception escapes.
        """
        native = self.native_pitch(voice.pitch)
        rest = voice.pitch / native
        stream = _Resampler(self.capabilities.sample_rate * rest, OUTPUT_RATE)
        chunks = self._synthesize_impl(text, voice, pitch=native, tempo=rest)
        busy_s, audio_samples = 0.0, 0
        try:
            while True:
                started = time.perf_counter()
                chunk = await self._next(chunks)
                busy_s += time.perf_counter() - started
                if chunk is _DONE:
                    break
                out = stream.push(chunk)
                audio_samples += len(out)
                if len(out):
                    yield out
            tail = stream.finish()
            audio_samples += len(tail)
            if len(tail):
                yield tail
        finally:
            await chunks.aclose()
            metrics.SYNTH_SECONDS.labels(provider=self.name).observe(busy_s)
            metrics.AUDIO_SECONDS.labels(provider=self.name).inc(audio_samples / OUTPUT_RATE)
            metrics.CHARACTERS.labels(provider=self.name).inc(len(text))

    async def _next(self, chunks: AsyncIterator[np.ndarray]) -> object:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await anext(chunks)
        except StopAsyncIteration:
            return _DONE
        except TimeoutError:
            metrics.PROVIDER_ERRORS.labels(provider=self.name, retryable="true").inc()
            raise ProviderTimeout(self.name, self.timeout_s) from None
        except ProviderError as exc:
            metrics.PROVIDER_ERRORS.labels(provider=self.name,
                                           retryable=str(exc.retryable).lower()).inc()
            raise
        except Exception as exc:
            metrics.PROVIDER_ERRORS.labels(provider=self.name, retryable="false").inc()
            raise ProviderError(self.name, f"{type(exc).__name__}: {exc}") from exc

    def native_pitch(self, pitch: float) -> float:
        """The part of the pitch factor the provider makes itself; the rest is resampling."""
        return 1.0

    @abstractmethod
    def _synthesize_impl(self, text: str, voice: VoiceSpec, pitch: float, tempo: float
                         ) -> AsyncIterator[np.ndarray]:
        """int16 mono chunks at ``capabilities.sample_rate``, at pitch factor ``pitch`` (the
        ``native_pitch`` part) and spoken ``tempo`` times slower than ``voice`` asks for (the
        base class turns that slowdown into the rest of the pitch)."""

    async def _in_thread(self, produce: Callable[[], Iterator[np.ndarray]]
                         ) -> AsyncIterator[np.ndarray]:
        """Run a blocking generator in the provider's worker threads, one item per hop, so
        the event loop stays responsive. The pool has ``max_parallel`` threads: that many
        syntheses run at once per provider, the others queue (CPU-bound work gains nothing
        from more threads than cores)."""
        iterator: Iterator[np.ndarray] | None = None

        def step() -> object:
            nonlocal iterator
            if iterator is None:
                iterator = produce()
            return next(iterator, _DONE)

        loop = asyncio.get_running_loop()
        while True:
            item = await loop.run_in_executor(self._pool, step)
            if item is _DONE:
                return
            yield item  # type: ignore[misc]

    def warm_up(self) -> None:
        """Blocking: run once before serving so the first turn is not the slow one."""

    def close(self) -> None:
        """Free what the provider holds (threads, models)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """``close``, and the connections a network provider keeps open in the event loop."""
        self.close()


class _Resampler:
    """Streaming soxr resampler from a (possibly fractional, pitch-shifted) rate to 48 kHz."""

    def __init__(self, in_rate: float, out_rate: int):
        self._identity = abs(in_rate - out_rate) < 1e-6
        self._stream = None if self._identity else soxr.ResampleStream(
            in_rate, out_rate, 1, dtype="int16", quality="HQ")

    def push(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.ascontiguousarray(chunk, dtype=np.int16).reshape(-1)
        if self._stream is None:
            return chunk
        return self._stream.resample_chunk(chunk)

    def finish(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
