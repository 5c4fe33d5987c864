"""48 kHz mono PCM16 -> 20 ms opus packets in Discord's format (48 kHz stereo)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from glyphoxa_audio.opus import DISCORD_CHANNELS, DISCORD_RATE, OpusEncoder, samples_per_frame

FRAME_SAMPLES = samples_per_frame(DISCORD_RATE)


class FrameEncoder:
    """Cuts a turn's audio into 20 ms frames and encodes each as soon as it is complete.

    One encoder per turn: opus frames of a turn depend on each other, so they come from one
    encoder state, in order.
    """

    def __init__(self, bitrate: int = 64_000):
        self._opus = OpusEncoder(DISCORD_RATE, DISCORD_CHANNELS, bitrate=bitrate)
        self._rest = np.zeros(0, dtype=np.int16)

    def push(self, pcm: np.ndarray) -> Iterator[bytes]:
        """Every whole frame available, encoded one at a time as the caller asks for it
        (a 5 s sentence is ~50 ms of encoding: the first frame should not wait for the
        last); the remainder waits for the next push."""
        pcm = np.concatenate([self._rest, np.asarray(pcm, dtype=np.int16).reshape(-1)])
        whole = len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES
        self._rest = pcm[whole:]
        return (self._encode(pcm[i:i + FRAME_SAMPLES]) for i in range(0, whole, FRAME_SAMPLES))

    def finish(self) -> list[bytes]:
        """End of a sentence: the partial last frame, padded with silence (or nothing)."""
        if not len(self._rest):
            return []
        frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        frame[: len(self._rest)] = self._rest
        self._rest = np.zeros(0, dtype=np.int16)
        return [self._encode(frame)]

    def _encode(self, mono: np.ndarray) -> bytes:
        return self._opus.encode(np.repeat(mono[:, None], DISCORD_CHANNELS, axis=1))
