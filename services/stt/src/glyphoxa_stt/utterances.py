"""The utterances of one session that have started but are not transcribed yet (bounded)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from glyphoxa_events.models import UtteranceStarted

BYTES_PER_SECOND = 16_000 * 2


class TooLong(Exception):
    """The utterance outgrew the audio kept per utterance."""


@dataclass
class OpenUtterance:
    started: UtteranceStarted
    start_seq: int
    """Stream sequence of the ``start`` message: where a replay has to begin."""
    last_input: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0
    too_long: bool = False
    early: EarlyTranscription | None = None
    """Started when vad said the speaker went quiet (``STT_TRANSCRIBE_ON_PAUSE``)."""

    @property
    def utterance_id(self) -> str:
        return self.started.utterance_id

    def add(self, index: int, pcm: bytes, max_bytes: int) -> bool:
        """Keep one chunk (a repeated index is kept once); False if it was a duplicate."""
        if self.too_long or index in self.chunks:
            return False
        if self.size + len(pcm) > max_bytes:
            self.too_long = True
            self.chunks.clear()
            raise TooLong(f"more than {max_bytes // BYTES_PER_SECOND} s of audio")
        self.chunks[index] = pcm
        self.size += len(pcm)
        return True

    def audio(self) -> np.ndarray:
        data = b"".join(self.chunks[i] for i in sorted(self.chunks))
        return np.frombuffer(data, dtype=np.int16)

    def has_chunks(self, n: int) -> bool:
        """Exactly chunks 0..n-1 are here."""
        return len(self.chunks) == n and all(i in self.chunks for i in range(n))

    def drop_early(self) -> None:
        if self.early is not None:
            self.early.task.cancel()
            self.early = None


@dataclass
class EarlyTranscription:
    """The utterance transcribed at a pause: its ``chunks`` chunks plus ``tail``."""

    chunks: int
    tail: bytes
    task: asyncio.Task

    def covers(self, utt: OpenUtterance, ended_chunks: int) -> bool:
        """The ended utterance is exactly the audio transcribed: no frame came after the
        pause, so the end's last chunk is the pause's tail (or there was none)."""
        if self.tail:
            return (ended_chunks == self.chunks + 1 and utt.has_chunks(ended_chunks)
                    and utt.chunks[self.chunks] == self.tail)
        return ended_chunks == self.chunks and utt.has_chunks(ended_chunks)


class OpenUtterances:
    """Open utterances in start order, at most ``limit``; remembers recently finished ids."""

    def __init__(self, limit: int, remember: int = 512):
        self._open: OrderedDict[str, OpenUtterance] = OrderedDict()
        self._limit = limit
        self._finished: deque[str] = deque(maxlen=remember)
        self._finished_set: set[str] = set()

    def __len__(self) -> int:
        return len(self._open)

    def get(self, utterance_id: str) -> OpenUtterance | None:
        return self._open.get(utterance_id)

    def open(self, utt: OpenUtterance) -> OpenUtterance | None:
        """Add an utterance; returns the oldest one if it had to make room for it."""
        evicted = None
        if len(self._open) >= self._limit:
            _, evicted = self._open.popitem(last=False)
        self._open[utt.utterance_id] = utt
        return evicted

    def finish(self, utterance_id: str) -> OpenUtterance | None:
        utt = self._open.pop(utterance_id, None)
        if len(self._finished) == self._finished.maxlen:
            self._finished_set.discard(self._finished[0])
        self._finished.append(utterance_id)
        self._finished_set.add(utterance_id)
        return utt

    def finished(self, utterance_id: str) -> bool:
        return utterance_id in self._finished_set

    def idle(self, now: float, idle_s: float) -> list[OpenUtterance]:
        return [u for u in self._open.values() if now - u.last_input > idle_s]

    def all(self) -> list[OpenUtterance]:
        return list(self._open.values())

    def oldest_start_seq(self) -> int | None:
        return min((u.start_seq for u in self._open.values()), default=None)
