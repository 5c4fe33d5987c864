"""What the brain remembers of a session, rebuilt from the session's control events.

Control events are replayed from the start of the session to every replica that serves
it, so everything here is derived from them alone: the campaign (``session.started``),
speaker names, muted NPCs, the NPC addressed last and when, and the conversation. An
exchange enters memory from its ``turn`` event; a ``played`` event replaces the NPC's
words with what the players actually heard. A cancelled turn, or a line the GM had an
NPC speak, enters memory only once a ``played`` event says something of it was heard.
What each NPC remembers of earlier sessions comes with ``session.started`` (its recap and
the facts the GM taught it), and ``npc.taught`` adds a fact mid-session.

Applying the same event twice changes nothing (a replica also receives its own events).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from glyphoxa_campaign import Campaign
from glyphoxa_events.models import (
    AudioDone,
    Event,
    NpcForgot,
    NpcMute,
    NpcSpeak,
    NpcTaught,
    Outcome,
    Played,
    SessionMemorySeed,
    SessionStarted,
    Speaker,
    TurnEnded,
)
from glyphoxa_npc_brain.routing import LastAddress

MAX_TAUGHT = 64
"""Facts taught mid-session kept per NPC (the prompt shows fewer, the newest)."""

_ADDRESSED = (Outcome.answered, Outcome.muted, Outcome.cancelled, Outcome.failed, Outcome.timed_out)


@dataclass
class Exchange:
    turn_id: str
    npc: str
    speaker: str | None  # None: a line the GM had the NPC say
    player_text: str
    npc_text: str


class _Bounded(OrderedDict[str, object]):
    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def remember(self, key: str, value: object) -> None:
        self[key] = value
        while len(self) > self.limit:
            self.popitem(last=False)


class SessionMemory:
    def __init__(self, max_exchanges: int = 256, max_turns: int = 4096):
        self.campaign: Campaign | None = None
        self.speakers: dict[str, str] = {}
        self.last_address: LastAddress | None = None
        self._muted: set[str] = set()
        self._exchanges: OrderedDict[str, Exchange] = OrderedDict()
        self._max_exchanges = max_exchanges
        self._unheard = _Bounded(max_turns)  # turn id -> Exchange waiting for a played event
        self._heard = _Bounded(max_turns)  # turn id -> text_heard
        self._ended = _Bounded(max_turns)  # turn ids with a turn event
        self._voiced = _Bounded(max_turns)  # turn ids tts or the edge reported audio for
        self.seed = SessionMemorySeed()
        self._taught: dict[str, _Bounded] = {}  # npc -> fact id -> text, taught mid-session
        self._forgotten: dict[str, set[str]] = {}  # npc -> texts the GM took back mid-session

    # --- applying events --------------------------------------------------------------

    def apply(self, event: Event) -> None:
        if isinstance(event, SessionStarted):
            self.campaign = event.campaign
            self.seed = event.memory
        elif isinstance(event, NpcTaught):
            self._taught_fact(event)
        elif isinstance(event, NpcForgot):
            self._forgot_fact(event)
        elif isinstance(event, Speaker):
            self.speakers[event.speaker] = event.display_name
        elif isinstance(event, NpcMute):
            self._mute(event)
        elif isinstance(event, TurnEnded):
            self._turn_ended(event)
        elif isinstance(event, Played):
            self._played(event)
        elif isinstance(event, AudioDone):
            self._voiced.remember(event.turn_id, True)
        elif isinstance(event, NpcSpeak):
            self._unheard.remember(
                event.request_id, Exchange(event.request_id, event.npc, None, "", event.text)
            )

    def _taught_fact(self, event: NpcTaught) -> None:
        # session.started comes first; a fact for an NPC the campaign lacks is of no one's
        if self.campaign is None or self.campaign.npc(event.npc) is None:
            return
        self._taught.setdefault(event.npc, _Bounded(MAX_TAUGHT)).remember(
            event.fact_id, event.text)
        self._forgotten.get(event.npc, set()).discard(event.text.strip())

    def _forgot_fact(self, event: NpcForgot) -> None:
        """The fact leaves the NPC's prompt, whether the session started with it (the seed
        holds texts, not ids) or it was taught since."""
        taught = self._taught.get(event.npc)
        if taught is not None and event.fact_id in taught:
            del taught[event.fact_id]
        forgotten = self._forgotten.setdefault(event.npc, set())
        if len(forgotten) < MAX_TAUGHT:
            forgotten.add(event.text.strip())

    def _mute(self, event: NpcMute) -> None:
        if event.npc != "*":
            (self._muted.add if event.muted else self._muted.discard)(event.npc)
        elif not event.muted:
            self._muted.clear()
        else:
            if self.campaign is not None:
                self._muted.update(n.token for n in self.campaign.npcs)
            self._muted.add("*")  # stands for every NPC until the campaign is known

    def _turn_ended(self, event: TurnEnded) -> None:
        self._ended.remember(event.turn_id, True)
        if event.npc is None or event.outcome not in _ADDRESSED:
            return
        at = event.latency.speech_end_ns
        if self.last_address is None or at >= self.last_address.speech_end_ns:
            self.last_address = LastAddress(event.npc, at)
        exchange = Exchange(
            event.turn_id, event.npc, event.speaker, event.transcript, event.reply_text
        )
        if event.turn_id in self._heard:
            exchange.npc_text = str(self._heard[event.turn_id])
            self._keep(exchange)
        elif event.outcome == Outcome.answered:
            self._keep(exchange)
        elif event.reply_text:
            self._unheard.remember(event.turn_id, exchange)

    def _played(self, event: Played) -> None:
        self._voiced.remember(event.turn_id, True)
        if event.complete and not event.text_heard.strip():
            return  # heard whole, but the edge never learnt the text: the reply stands
        self._heard.remember(event.turn_id, event.text_heard)
        if event.turn_id in self._exchanges:
            self._exchanges[event.turn_id].npc_text = event.text_heard
        elif event.turn_id in self._unheard and event.text_heard.strip():
            exchange = self._unheard.pop(event.turn_id)
            assert isinstance(exchange, Exchange)
            exchange.npc_text = event.text_heard
            self._keep(exchange)

    def _keep(self, exchange: Exchange) -> None:
        if exchange.turn_id in self._exchanges:
            self._exchanges[exchange.turn_id] = exchange
            return
        self._exchanges[exchange.turn_id] = exchange
        while len(self._exchanges) > self._max_exchanges:
            self._exchanges.popitem(last=False)

    # --- questions ----------------------------------------------------------------------

    def is_muted(self, npc: str) -> bool:
        return npc in self._muted or ("*" in self._muted and self.campaign is None)

    def has_ended(self, turn_id: str) -> bool:
        """A turn event for ``turn_id`` exists: the turn must not be taken again."""
        return turn_id in self._ended

    def was_voiced(self, turn_id: str) -> bool:
        """Audio was produced or played for ``turn_id`` (a GM line already spoken)."""
        return turn_id in self._voiced

    def speaker_name(self, speaker: str | None) -> str:
        if speaker is None:
            return "GM"
        return self.speakers.get(speaker) or speaker.replace("-", " ").replace("_", " ").title()

    def history(self, npc: str, limit: int, exclude: str = "") -> list[Exchange]:
        """About the last ``limit`` exchanges with ``npc``, oldest first.

        The window moves in steps of half its size rather than one exchange at a time, so
        the start of the conversation (a prompt prefix) stays the same for several turns
        and its evaluation can be reused from the prompt cache.
        """
        if limit <= 0:
            return []
        mine = [e for e in self._exchanges.values() if e.npc == npc and e.turn_id != exclude]
        step = max(limit // 2, 1)
        overflow = len(mine) - limit
        start = -(-overflow // step) * step if overflow > 0 else 0
        return mine[start:]

    def witnessed(self, npc: str, limit: int, exclude: str = "") -> list[Exchange]:
        """Up to ``limit`` exchanges with other NPCs since ``npc`` last spoke that ``npc``
        witnessed (``Campaign.witnesses``: with ``overhear``, said in its scene; otherwise
        none), oldest first. A line the GM had an NPC say follows the same rule."""
        if limit <= 0 or self.campaign is None:
            return []
        since: list[Exchange] = []
        for exchange in self._exchanges.values():
            if exchange.turn_id == exclude:
                continue
            if exchange.npc == npc:
                since.clear()
            elif npc in self.campaign.witnesses(exchange.npc):
                since.append(exchange)
        return since[-limit:]

    def recap(self, npc: str) -> str:
        """What ``npc`` went through in earlier sessions (its latest recap), or ""."""
        return self.seed.recaps.get(npc, "").strip()

    def facts(self, npc: str) -> list[str]:
        """The facts the GM taught ``npc``, oldest first: those it knew when the session
        started, then those taught since (a fact taught twice is there once)."""
        facts: list[str] = []
        taught = self._taught.get(npc)
        forgotten = self._forgotten.get(npc, set())
        for fact in (*self.seed.facts.get(npc, ()), *(taught.values() if taught else ())):
            fact = str(fact).strip()
            if fact and fact not in facts and fact not in forgotten:
                facts.append(fact)
        return facts
