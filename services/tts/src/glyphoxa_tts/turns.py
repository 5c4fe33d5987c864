"""What the tts core keeps about turns: the open ones and the sentences synthesized ahead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from glyphoxa_runtime.growing import Growing
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
    written_ns: int = 0
    """When npc-brain wrote the chunk being spoken (``ReplyChunk.published_ns``)."""
    stale: str = ""
    """Why the rest of the turn must not be heard any more (it came too late)."""
    span: Any = None
    """The span of the sentence being spoken (``glyphoxa_runtime.tracing``; None when off)."""
    trace: Mapping[str, str] = field(default_factory=dict)
    """Its context, carried by the sentence's frames (a ``traceparent`` header)."""


@dataclass
class Held:
    """A guessed reply's first sentence, synthesized ahead of its turn and kept unpublished
    until a real turn's chunk claims it (``ReplyChunk.hold``/``claims``)."""

    turn_id: str
    npc: str
    text: str
    encoder: FrameEncoder
    """The claiming turn goes on with this encoder: its later sentences continue the opus
    state the held frames ended with."""
    pieces: Growing[list[bytes]] = field(default_factory=Growing)
    """Its opus frames as they are made, one list per piece of the provider's audio
    (``follow`` hands them on while it goes on)."""
    failed: bool = False
    """The provider failed before the sentence was whole."""
    made: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None

    def matches(self, npc: str, text: str) -> bool:
        return (self.npc == npc and self.text == text
                and not (self.failed and not self.pieces.items))
