"""The instant provider for benchmarks and bus tests: a quiet tone, 60 ms per character."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_tts.providers.base import TTSCapabilities, TTSProvider

RATE = 48_000
SECONDS_PER_CHAR = 0.06
TONE_HZ = 220.0
AMPLITUDE = 0.1
CHUNK_S = 0.5


class FakeProvider(TTSProvider):
    name = "fake"

    def __init__(self, timeout_s: float = 30.0, max_parallel: int = 1,
                 seconds_per_char: float = SECONDS_PER_CHAR):
        super().__init__(TTSCapabilities(sample_rate=RATE, streaming=True),
                         timeout_s=timeout_s, max_parallel=max_parallel)
        self.seconds_per_char = seconds_per_char

    async def _synthesize_impl(self, text: str, voice: VoiceSpec, pitch: float, tempo: float
                               ) -> AsyncIterator[np.ndarray]:
        text = text.strip()
        total = int(len(text) * self.seconds_per_char * voice.length_scale * tempo * RATE)
        step = int(CHUNK_S * RATE)
        for start in range(0, total, step):
            # read back at RATE * pitch by the base class: the tone comes out at TONE_HZ * pitch
            yield _CHUNK[:min(step, total - start)]


def _chunk() -> np.ndarray:
    """CHUNK_S of the tone, computed once: every chunk starts at a whole number of its periods
    (TONE_HZ * CHUNK_S cycles), so each is this one or the start of it (an instant voice costs
    no CPU of its own a sentence)."""
    assert (TONE_HZ * CHUNK_S).is_integer()
    tone = AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * np.arange(int(CHUNK_S * RATE)) / RATE)
    chunk = (tone * 32767).astype(np.int16)
    chunk.setflags(write=False)
    return chunk


_CHUNK = _chunk()
