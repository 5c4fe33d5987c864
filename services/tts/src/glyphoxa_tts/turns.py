"""What the tts core remembers about turns: the open ones and the recently finished ones."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from glyphoxa_tts.frames import FrameEncoder


@dataclass
class Turn:
    """One NPC turn being spoken: its frames are numbered from 0 across its sentences."""

    turn_id: str
    npc: str
    first_seq: int
    """Stream sequence of the turn's first reply chunk (replayed from there on failover)."""
    speech_end_ns: int
    encoder: FrameEncoder
    arrived: float = field(default_factory=time.monotonic)
    last_chunk: float = field(default_factory=time.monotonic)
    frames: int = 0
    first_audio_ns: int = 0
    first_audio_s: float | None = None
    """From the arrival of the first chunk to the first frame published."""
    closed: bool = False
    publishing: bool = False
    """A frame is on its way out: a cancel waits for it rather than interrupting it."""


class RecentIds:
    """A bounded set of ids remembering the newest ``size`` entries."""

    def __init__(self, size: int = 1024):
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, value: str) -> None:
        self._ids[value] = None
        self._ids.move_to_end(value)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def discard(self, value: str) -> None:
        self._ids.pop(value, None)

    def __contains__(self, value: object) -> bool:
        return value in self._ids

    def __len__(self) -> int:
        return len(self._ids)
