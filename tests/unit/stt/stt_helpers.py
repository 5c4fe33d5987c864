"""Helpers to drive the stt core without NATS: vad messages in, published transcripts out."""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from glyphoxa_bus.session import InputMessage
from glyphoxa_campaign import Campaign, Npc
from glyphoxa_events import headers as H
from glyphoxa_events.models import (
    MalformedEvent,
    SessionStarted,
    Transcript,
    Usage,
    UtteranceEnded,
    UtteranceStarted,
)
from glyphoxa_events.subjects import SessionSubjects

TENANT, SESSION = "t1", "s1"


class FakePublisher:
    """Stands in for ``glyphoxa_bus.publisher.Publisher``: keeps what was published
    (transcripts in ``published``, usage events in ``usage`` with their msg ids)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, str]] = []
        self.usage: list[tuple[str, Usage, str]] = []

    async def publish(self, subject: str, data: bytes, msg_id: str,
                      headers: dict[str, str] | None = None) -> None:
        if ".usage." in subject:
            self.usage.append((subject, Usage.model_validate_json(data), msg_id))
        else:
            self.published.append((subject, data, msg_id))

    async def publish_event(self, subject: str, event: object, msg_id: str) -> None:
        await self.publish(subject, event.to_bytes(), msg_id)  # type: ignore[attr-defined]

    async def flush(self) -> None:
        pass

    def transcripts(self) -> list[Transcript]:
        return [Transcript.model_validate_json(data) for _, data, _ in self.published]


class VadFeed:
    """Builds vad messages the way vad publishes them (docs/contract.md), numbering the stream."""

    def __init__(self, subjects: SessionSubjects):
        self.subjects = subjects
        self.seq = 0

    def _msg(self, subject: str, data: bytes, headers: dict[str, str]) -> InputMessage:
        self.seq += 1
        return InputMessage(subject, data, headers, self.seq)

    def start(self, utt: str, speaker: str = "alex", start_ns: int = 1_000) -> InputMessage:
        event = UtteranceStarted(utterance_id=utt, speaker=speaker, start_ns=start_ns)
        return self._msg(self.subjects.vad(speaker), event.to_bytes(),
                         {H.KIND: "start", H.UTTERANCE: utt})

    def audio(self, utt: str, index: int, pcm: bytes, speaker: str = "alex") -> InputMessage:
        return self._msg(self.subjects.vad(speaker), pcm,
                         {H.KIND: "audio", H.UTTERANCE: utt, H.SEQ: str(index)})

    def pause(self, utt: str, chunks: int, tail: bytes = b"", speaker: str = "alex") -> InputMessage:
        return self._msg(self.subjects.vad(speaker), tail,
                         {H.KIND: "pause", H.UTTERANCE: utt, H.SEQ: str(chunks),
                          H.SPEECH_END_NS: "2000"})

    def end(self, utt: str, chunks: int, audio_ms: int = 0, speaker: str = "alex",
            start_ns: int = 1_000, speech_end_ns: int = 2_000, vad_end_ns: int = 3_000) -> InputMessage:
        event = UtteranceEnded(utterance_id=utt, speaker=speaker, start_ns=start_ns,
                               speech_end_ns=speech_end_ns, chunks=chunks, audio_ms=audio_ms,
                               vad_end_ns=vad_end_ns)
        return self._msg(self.subjects.vad(speaker), event.to_bytes(),
                         {H.KIND: "end", H.UTTERANCE: utt})

    def utterance(self, utt: str, pcm: np.ndarray, speaker: str = "alex",
                  chunk_ms: int = 100, **end: int) -> list[InputMessage]:
        step = 16 * chunk_ms
        chunks = [pcm[i:i + step].tobytes() for i in range(0, len(pcm), step)]
        msgs = [self.start(utt, speaker)]
        msgs += [self.audio(utt, i, c, speaker) for i, c in enumerate(chunks)]
        msgs.append(self.end(utt, len(chunks), len(pcm) // 16, speaker, **end))
        return msgs

    def raw(self, subject: str, data: bytes, headers: dict[str, str]) -> InputMessage:
        return self._msg(subject, data, headers)


class Rejections:
    """A rejected-messages counter on its own registry (as StageMetrics.rejected)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counter = Counter("test_rejected_messages", "rejected", ["stage", "reason"],
                               registry=self.registry)

    def count(self, reason: str) -> float:
        value = self.registry.get_sample_value(
            "test_rejected_messages_total", {"stage": "stt", "reason": reason})
        return value or 0.0


def campaign() -> Campaign:
    return Campaign(name="Forge and Tavern", npcs=(
        Npc(name="Greta", persona="gruff dwarven blacksmith"),
        Npc(name="Aldric", persona="innkeeper of the Prancing Stag"),
        Npc(name="Mirela", persona="secretive herbalist"),
        Npc(name="Captain Voss", aliases=("Voss",), persona="captain of the city watch"),
    ))


def session_started() -> SessionStarted:
    return SessionStarted(campaign=campaign(), started_ns=1)


async def drive(handler: object, msgs: Iterable[InputMessage], rejections: Rejections | None = None) -> None:
    """What ``serve_session`` does with input: in order, a malformed message costs only itself."""
    for msg in msgs:
        try:
            await handler.on_message(msg)  # type: ignore[attr-defined]
        except MalformedEvent:
            if rejections is not None:
                rejections.counter.labels(stage="stt", reason="malformed").inc()
        await handler.on_tick()  # type: ignore[attr-defined]


def tone(seconds: float, level: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


def dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()
