"""Helpers shared by the tts tests: a collecting publisher, a campaign, pitch estimation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import soxr

from glyphoxa_bus.session import InputMessage, SessionContext
from glyphoxa_campaign import Campaign, Npc
from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_events import headers as H
from glyphoxa_events.frames import unpack as unpack_frames
from glyphoxa_events.models import Event, ReplyChunk, Usage
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_tts.providers.base import TTSCapabilities, TTSProvider

TENANT, SESSION = "t1", "s1"
SUBJECTS = SessionSubjects(TENANT, SESSION)
CAMPAIGN = Campaign(name="test", npcs=(
    Npc(name="Grom", persona="A dwarf innkeeper.", voice=VoiceSpec(provider="fake")),
    Npc(name="Elira", persona="An elven scout.", voice=VoiceSpec(provider="fake", pitch=1.3)),
))


@dataclass
class Sent:
    subject: str
    data: bytes
    msg_id: str
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


class CollectingPublisher:
    """Stands in for ``glyphoxa_bus.publisher.Publisher``: records every publish."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.sent: list[Sent] = []
        self.delay_s = delay_s

    async def publish(self, subject: str, data: bytes, msg_id: str,
                      headers: dict[str, str] | None = None) -> None:
        # like the real one: the message is on the wire before the call returns
        self.sent.append(Sent(subject, data, msg_id, dict(headers or {})))
        await asyncio.sleep(self.delay_s)

    async def publish_event(self, subject: str, event: Event, msg_id: str) -> None:
        await self.publish(subject, event.to_bytes(), msg_id)

    async def flush(self) -> None:
        return None

    def messages(self) -> list[Sent]:
        """The ``audio.out`` messages as published (a message may carry several frames)."""
        return [s for s in self.sent if ".audio.out." in s.subject]

    def frames(self) -> list[Sent]:
        """Every frame of the ``audio.out`` messages, in order, with its own ``Glx-Seq``
        (the message's id, publish time and other headers are its message's)."""
        out = []
        for m in self.messages():
            first = int(m.headers[H.SEQ])
            headers = {k: v for k, v in m.headers.items() if k != H.FRAMES}
            for i, packet in enumerate(unpack_frames(m.headers, m.data)):
                out.append(Sent(m.subject, packet, m.msg_id, {**headers, H.SEQ: str(first + i)}, m.at))
        return out

    def controls(self) -> list[Sent]:
        return [s for s in self.sent if ".ctl." in s.subject]

    def usage(self) -> list[tuple[Usage, str]]:
        return [(Usage.model_validate_json(s.data), s.msg_id) for s in self.sent
                if ".usage." in s.subject]


class CountingRejects:
    """Stands in for the ``rejected_messages_total`` counter."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self._pending: dict[str, str] = {}

    def labels(self, **labels: str) -> CountingRejects:
        self._pending = labels
        return self

    def inc(self, amount: float = 1) -> None:
        self.reasons.append(self._pending["reason"])


def context(publisher: CollectingPublisher, rejects: CountingRejects | None = None
            ) -> SessionContext:
    return SessionContext("tts", SUBJECTS, nc=None, publisher=publisher,  # type: ignore[arg-type]
                          metrics_rejected=rejects)


def reply(turn: str, index: int, text: str, *, final: bool = False, npc: str = "grom",
          seq: int = 1, speech_end_ns: int | None = None, subject_npc: str | None = None,
          hold: bool = False, claims: str | None = None, published_ns: int = 0) -> InputMessage:
    if speech_end_ns is None:  # the player's line ended just now
        speech_end_ns = time.time_ns()
    chunk = ReplyChunk(turn_id=turn, npc=npc, index=index, text=text, final=final,
                       speech_end_ns=speech_end_ns, hold=hold, claims=claims,
                       published_ns=published_ns)
    return InputMessage(SUBJECTS.reply(subject_npc or npc), chunk.to_bytes(),
                        {"Glx-Turn": turn}, seq)


class ScriptedProvider(TTSProvider):
    """A provider under the test's control: fixed chunks, a delay before each, or failure."""

    name = "scripted"

    def __init__(self, chunks: int = 3, chunk_s: float = 0.5, delay_s: float = 0.0,
                 fail: Exception | None = None, hang: bool = False, timeout_s: float = 5.0):
        super().__init__(TTSCapabilities(sample_rate=48_000, streaming=True), timeout_s=timeout_s)
        self.chunks, self.chunk_s, self.delay_s = chunks, chunk_s, delay_s
        self.fail, self.hang = fail, hang
        self.started = asyncio.Event()
        self.finished_at: float | None = None

    async def _synthesize_impl(self, text: str, voice: VoiceSpec, pitch: float, tempo: float
                               ) -> AsyncIterator[np.ndarray]:
        self.started.set()
        if self.fail is not None:
            raise self.fail
        if self.hang:
            await asyncio.sleep(3600)
        n = int(self.chunk_s * 48_000 * tempo)
        for _ in range(self.chunks):
            await asyncio.sleep(self.delay_s)
            t = np.arange(n) / 48_000
            yield (3000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
        self.finished_at = time.monotonic()


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for ``condition`` (polling), failing the test after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def dominant_f0(pcm: np.ndarray, rate: int = 48_000) -> float:
    """Median fundamental frequency (autocorrelation) over the louder, voiced 40 ms frames."""
    x = soxr.resample(np.asarray(pcm, dtype=np.float32) / 32768, rate, 16_000)
    frame, hop = 640, 160
    starts = range(0, len(x) - frame, hop)
    energy = np.array([np.sqrt(np.mean(x[i:i + frame] ** 2)) for i in starts])
    threshold = np.percentile(energy, 60)
    lo, hi = 16_000 // 500, 16_000 // 50
    found = []
    for k, i in enumerate(starts):
        if energy[k] < threshold:
            continue
        w = x[i:i + frame] - x[i:i + frame].mean()
        ac = np.correlate(w, w, "full")[frame - 1:]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4 * ac[0]:
            found.append(16_000 / lag)
    assert found, "no voiced frames"
    return float(np.median(found))


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(pcm, dtype=np.float64) ** 2)))
