"""Players' voice onto the bus: each opus packet, unchanged, to ``audio.in.<speaker>``.

Discord user ids never reach a subject: each member who speaks gets a speaker token for the
session (from their display name, ``player-<n>`` when it has no letter or digit), announced
once with a ``speaker`` control event (token and display name) before their first packet.
Each packet is published with:

- ``Glx-Capture-Ns``: when it was spoken. Discord sends no capture time; within a talk spurt
  it is the spurt's first arrival plus the RTP timestamp's advance (48 kHz), so network
  jitter does not bend the timeline; a packet after a pause of ``SPURT_GAP_NS`` starts a
  new spurt at its arrival.
- ``Glx-Seq``: the capture time counted in 20 ms frames, or one more than the member's last
  if that is higher. So it grows with time, not with what the edge remembers: a member who
  leaves and rejoins, and a restarted edge (a new bridge, the same speaker token), go on
  above the numbers already published, and the message id ``ain:T.S:<speaker>:<seq>`` is
  never one JetStream has seen (docs/contract.md).

The RTP sequence number only says which packets of one talk spurt came late: a packet
older than the last one published is dropped here (counted as late; vad would refuse it).
After a pause of ``SPURT_GAP_NS`` it means nothing: a client that reconnected, or rejoined
the call, numbers its packets afresh from a random start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from glyphoxa_events import headers as H
from glyphoxa_events.models import Event, Speaker
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_events.tokens import InvalidToken, slugify

log = logging.getLogger("glyphoxa.discord_edge.inbound")

SPURT_GAP_NS = 200_000_000
RTP_RATE = 48_000
FRAME_NS = 20_000_000
MAX_TOKEN = 32


class Bus(Protocol):
    """Where packets and events go (``glyphoxa_bus.publisher.Publisher`` in the service)."""

    async def publish(self, subject: str, data: bytes, msg_id: str,
                      headers: dict[str, str] | None = None) -> None: ...

    async def publish_event(self, subject: str, event: Event, msg_id: str) -> None: ...


@dataclass
class _Member:
    token: str
    seq: int = -1
    """``Glx-Seq`` of the last packet published."""
    rtp_last: int = -1
    """RTP sequence number of the last packet published in this talk spurt."""
    spurt_ns: int = 0
    spurt_ts: int = 0
    ts_unwrapped: int = 0
    last_arrival_ns: int = 0


@dataclass
class InboundCounters:
    published: int = 0
    late: int = 0
    members: int = 0


@dataclass
class Inbound:
    """The inbound half of one session's bridge."""

    bus: Bus
    subjects: SessionSubjects
    display_name: Callable[[int], str]
    """A member's display name by Discord user id (the guild's member cache)."""
    clock: Callable[[], int] = time.time_ns
    counters: InboundCounters = field(default_factory=InboundCounters)
    _members: dict[int, _Member] = field(default_factory=dict)
    _tokens: set[str] = field(default_factory=set)

    async def packet(self, user_id: int, rtp_seq: int, rtp_ts: int, opus: bytes,
                     received_ns: int) -> None:
        member = self._members.get(user_id) or await self._join(user_id)
        new_spurt = (member.last_arrival_ns == 0
                     or received_ns - member.last_arrival_ns > SPURT_GAP_NS)
        if not new_spurt and not _rtp_after(member.rtp_last, rtp_seq):
            self.counters.late += 1
            return
        capture_ns = self._capture(member, new_spurt, rtp_ts, received_ns)
        member.rtp_last = rtp_seq
        member.seq = max(member.seq + 1, capture_ns // FRAME_NS)
        s = self.subjects
        await self.bus.publish(
            s.audio_in(member.token), opus,
            f"ain:{s.tenant}.{s.session}:{member.token}:{member.seq}",
            {H.SEQ: str(member.seq), H.CAPTURE_NS: str(capture_ns), H.CODEC: H.CODEC_OPUS})
        self.counters.published += 1

    def speaker_of(self, user_id: int) -> str | None:
        member = self._members.get(user_id)
        return member.token if member else None

    async def _join(self, user_id: int) -> _Member:
        name = self.display_name(user_id) or "player"
        token = self._token_for(name)
        member = self._members[user_id] = _Member(token)
        self.counters.members += 1
        s = self.subjects
        await self.bus.publish_event(s.ctl("speaker"),
                                     Speaker(speaker=token, display_name=name[:100]),
                                     f"ctl:{s.tenant}.{s.session}:speaker:{token}")
        log.info("speaker joined", extra={"tenant": s.tenant, "session": s.session,
                                          "speaker": token})
        return member

    def _token_for(self, name: str) -> str:
        try:
            base = slugify(name)[:MAX_TOKEN].strip("-_") or "player"
        except InvalidToken:
            base = "player"
        token, n = base, 1
        while token in self._tokens or token == "player":
            n += 1
            token = f"{base}-{n}"
        self._tokens.add(token)
        return token

    @staticmethod
    def _capture(member: _Member, new_spurt: bool, rtp_ts: int, received_ns: int) -> int:
        member.last_arrival_ns = received_ns
        if new_spurt:
            member.spurt_ns, member.spurt_ts, member.ts_unwrapped = received_ns, rtp_ts, rtp_ts
            return received_ns
        member.ts_unwrapped = _unwrap(member.ts_unwrapped & 0xFFFFFFFF, member.ts_unwrapped,
                                      rtp_ts, 32)
        return member.spurt_ns + (member.ts_unwrapped - member.spurt_ts) * 1_000_000_000 // RTP_RATE


def _rtp_after(last: int, seq: int) -> bool:
    """Whether RTP sequence number ``seq`` comes after ``last`` (16 bits, wrapping)."""
    return _unwrap(last, 0, seq, 16) > 0


def _unwrap(last_raw: int, last_unwrapped: int, raw: int, bits: int) -> int:
    """``raw`` (a ``bits``-bit counter) unwrapped next to the last value seen."""
    if last_raw < 0:
        return raw
    span = 1 << bits
    delta = (raw - last_raw) % span
    if delta >= span // 2:
        delta -= span
    return last_unwrapped + delta
