"""Opus at Discord's format: 48 kHz stereo 20 ms frames.

The decoder can produce any opus rate directly: VAD and STT decode straight to 16 kHz mono
(libopus does that inside the decoder), so there is no separate resampling pass.
"""

from __future__ import annotations

import numpy as np

from glyphoxa_audio._libopus import import_opuslib

opuslib = import_opuslib()

DISCORD_RATE = 48_000
DISCORD_CHANNELS = 2
FRAME_MS = 20
MAX_PACKET_BYTES = 1275 * 3  # libopus' largest packet (120 ms of 20 ms frames is 6x1275; we take 20 ms)
SILENCE_FRAME = b"\xf8\xff\xfe"  # the opus silence frame Discord sends after speech


class OpusError(ValueError):
    """A packet that libopus cannot decode, or is too large to be a 20 ms frame."""


def samples_per_frame(rate: int, frame_ms: int = FRAME_MS) -> int:
    return rate * frame_ms // 1000


class OpusEncoder:
    """PCM16 (interleaved) -> opus packets of exactly one 20 ms frame."""

    def __init__(self, rate: int = DISCORD_RATE, channels: int = DISCORD_CHANNELS,
                 application: str = "voip", bitrate: int = 64_000):
        app = {"voip": opuslib.APPLICATION_VOIP, "audio": opuslib.APPLICATION_AUDIO}[application]
        self._enc = opuslib.Encoder(rate, channels, app)
        self._enc.bitrate = bitrate
        self.rate, self.channels = rate, channels
        self.frame_samples = samples_per_frame(rate)

    def encode(self, pcm: np.ndarray) -> bytes:
        """``pcm``: int16 array of one frame, shape (frame_samples,) or (frame_samples, channels)."""
        pcm = np.ascontiguousarray(pcm, dtype=np.int16)
        if pcm.size != self.frame_samples * self.channels:
            raise ValueError(f"a frame is {self.frame_samples} samples x {self.channels} channels")
        return self._enc.encode(pcm.tobytes(), self.frame_samples)


class OpusDecoder:
    """opus packets -> int16 PCM at ``rate``/``channels`` (any rate opus supports)."""

    def __init__(self, rate: int = 16_000, channels: int = 1):
        if rate not in (8000, 12000, 16000, 24000, 48000):
            raise ValueError(f"opus cannot decode to {rate} Hz")
        self._dec = opuslib.Decoder(rate, channels)
        self.rate, self.channels = rate, channels
        self.frame_samples = samples_per_frame(rate)

    def decode(self, packet: bytes) -> np.ndarray:
        if not packet:
            raise OpusError("empty opus packet")
        if len(packet) > MAX_PACKET_BYTES:
            raise OpusError(f"opus packet of {len(packet)} bytes is larger than any 20 ms frame")
        try:
            # allow up to 120 ms so a legal multi-frame packet is not an error
            raw = self._dec.decode(packet, self.frame_samples * 6)
        except opuslib.OpusError as exc:
            raise OpusError(f"corrupt opus packet: {exc}") from None
        pcm = np.frombuffer(raw, dtype=np.int16)
        return pcm.reshape(-1, self.channels) if self.channels > 1 else pcm

    def conceal(self) -> np.ndarray:
        """Packet-loss concealment for one missing 20 ms frame."""
        raw = self._dec.decode(b"", self.frame_samples, decode_fec=False)
        pcm = np.frombuffer(raw, dtype=np.int16)
        return pcm.reshape(-1, self.channels) if self.channels > 1 else pcm


def frames_of(pcm: np.ndarray, frame_samples: int) -> list[np.ndarray]:
    """Cut mono/interleaved PCM into whole frames, zero-padding the last one."""
    n = -(-len(pcm) // frame_samples)
    padded = np.zeros((n * frame_samples,) + pcm.shape[1:], dtype=np.int16)
    padded[: len(pcm)] = pcm
    return [padded[i * frame_samples:(i + 1) * frame_samples] for i in range(n)]
