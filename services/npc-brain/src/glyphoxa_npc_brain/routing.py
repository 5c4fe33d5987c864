"""Who is addressed by a line of speech: pure, no I/O, no clock but the utterances' own.

In order:

1. an NPC named at the start ("Hey Greta, ...") or at the end ("..., Captain Voss?") of
   the line, tolerant of misrecognised names; a name anywhere else, or followed by
   "said"/preceded by "ask", is a third-person mention, which makes the line table talk;
2. table talk (dice and rules, out-of-game chatter, narration of what the party does,
   questions to "anyone") goes to nobody;
3. a follow-up to the NPC addressed last, if that was at most ``followup_window_s`` ago,
   measured between the utterances' speech-end capture times (never the wall clock, so a
   replayed or sped-up scene routes exactly like the live one);
4. the only NPC of the campaign;
5. nobody.

NPCs with ``address_only`` answer only when named (steps 1 only).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from glyphoxa_campaign import Campaign, Npc
from glyphoxa_npc_brain.names import (
    NameForm,
    NameHit,
    Word,
    best_name_at,
    best_name_ending_at,
    mentions,
    name_forms,
    words_of,
)
from glyphoxa_npc_brain.tabletalk import table_talk_cue


class Route(StrEnum):
    name_start = "name_start"
    name_end = "name_end"
    followup = "followup"
    only_npc = "only_npc"
    table_talk = "table_talk"
    none = "none"


@dataclass(frozen=True)
class RoutingDecision:
    kind: Route
    npc: str | None  # the addressed NPC's token
    reason: str

    @property
    def addressed(self) -> bool:
        return self.npc is not None


@dataclass(frozen=True)
class LastAddress:
    """The NPC addressed most recently and the speech end (capture ns) of that utterance."""

    npc: str
    speech_end_ns: int


INTERJECTIONS: tuple[tuple[str, ...], ...] = tuple(
    tuple(p.split())
    for p in (
        "hey",
        "hi",
        "hello",
        "oi",
        "oh",
        "ah",
        "ok",
        "okay",
        "so",
        "well",
        "um",
        "uhm",
        "uh",
        "er",
        "erm",
        "hmm",
        "alright",
        "right",
        "yo",
        "listen",
        "look",
        "wait",
        "hold on",
        "hang on",
        "and",
        "but",
        "now",
        "please",
        "excuse me",
        "pardon me",
        "good morning",
        "good evening",
        "good day",
        "greetings",
        "hail",
        "mister",
        "mr",
        "miss",
        "mrs",
        "master",
        "mistress",
        "lady",
        "lord",
        "sir",
        "madam",
        "dear",
        "good",
        "yes",
        "no",
    )
)
"""Words that may come before a name at the start of a line ("okay so hey Greta, ...")."""

THIRD_PERSON_AFTER = frozenset(
    "is was said says told tells mentioned mentions seems seemed looks looked knows knew has "
    "had wants wanted thinks thought doesn't didn't isn't wasn't hasn't and or who gave "
    "sold went left".split()
)
"""A name followed by one of these (without a comma) is talked about, not talked to."""

MENTION_BEFORE = frozenset(
    "to ask asked with for about tell told at from of than and or like by see saw seen meet "
    "met find found visit call called named trust pay paid give gave show bring take follow "
    "kill fight help warn believe the that is was behind near into onto on in against "
    "poor old".split()
)
"""A name preceded by one of these (without a comma) is talked about, not talked to."""

TRAILING_COURTESY = frozenset("please eh huh then okay ok yeah friend".split())
_PAUSE = set(",.!?;:-\u2014\u2013")
_MAX_INTERJECTIONS = 3


class Router:
    def __init__(self, campaign: Campaign, followup_window_s: float = 30.0):
        self.campaign = campaign
        self.window_ns = int(followup_window_s * 1e9)
        self._forms: list[NameForm] = [f for npc in campaign.npcs for f in name_forms(npc)]

    def route(
        self, text: str, speech_end_ns: int, last: LastAddress | None = None
    ) -> RoutingDecision:
        words = words_of(text)
        if not words:
            return RoutingDecision(Route.none, None, "empty transcript")
        hit = self._named_at_start(words)
        if hit is not None:
            return self._named(Route.name_start, hit)
        hit = self._named_at_end(words)
        if hit is not None:
            return self._named(Route.name_end, hit)
        return self._unnamed(text, words, speech_end_ns, last)

    def _named(self, kind: Route, hit: NameHit) -> RoutingDecision:
        return RoutingDecision(
            kind, hit.form.npc, f"{kind.value}: {hit.form.text!r} ({hit.score:.0f})"
        )

    def _unnamed(
        self, text: str, words: list[Word], speech_end_ns: int, last: LastAddress | None
    ) -> RoutingDecision:
        mentioned = mentions(words, self._forms)
        if mentioned:
            name = self._npc(mentioned[0].form.npc).name
            return RoutingDecision(Route.table_talk, None, f"mentions {name} in the third person")
        cue = table_talk_cue(text)
        if cue is not None:
            return RoutingDecision(Route.table_talk, None, str(cue))
        if last is not None and self._can_follow_up(last, speech_end_ns):
            return RoutingDecision(
                Route.followup, last.npc, f"follow-up to {self._npc(last.npc).name}"
            )
        listening = [n for n in self.campaign.npcs if not n.address_only]
        if len(self.campaign.npcs) == 1 and listening:
            return RoutingDecision(Route.only_npc, listening[0].token, "the only NPC present")
        return RoutingDecision(Route.none, None, "no NPC named and no conversation going on")

    def _can_follow_up(self, last: LastAddress, speech_end_ns: int) -> bool:
        npc = self.campaign.npc(last.npc)
        if npc is None or npc.address_only:
            return False
        return abs(speech_end_ns - last.speech_end_ns) <= self.window_ns

    def _npc(self, token: str) -> Npc:
        npc = self.campaign.npc(token)
        assert npc is not None
        return npc

    def _named_at_start(self, words: list[Word]) -> NameHit | None:
        start = 0
        for _ in range(_MAX_INTERJECTIONS + 1):
            hit = best_name_at(words, start, self._forms)
            if hit is not None:
                return hit if _vocative_at_start(words, hit) else None
            skip = _interjection_at(words, start)
            if not skip:
                return None
            start += skip
        return None

    def _named_at_end(self, words: list[Word]) -> NameHit | None:
        end = len(words)
        while (
            end > 1 and words[end - 1].text in TRAILING_COURTESY and _pause_before(words[end - 1])
        ):
            end -= 1
        hit = best_name_ending_at(words, end, self._forms)
        if hit is None or hit.start == 0 or not _vocative_at_end(words, hit):
            return None
        return hit


def _interjection_at(words: list[Word], start: int) -> int:
    for phrase in INTERJECTIONS:
        end = start + len(phrase)
        if end <= len(words) and tuple(w.text for w in words[start:end]) == phrase:
            return len(phrase)
    return 0


def _pause_before(word: Word) -> bool:
    return any(ch in _PAUSE for ch in word.before)


def _vocative_at_start(words: list[Word], hit: NameHit) -> bool:
    if words[hit.end - 1].possessive:
        return False
    if hit.end == len(words):
        return True
    following = words[hit.end]
    if _pause_before(following):
        return True
    return following.text not in THIRD_PERSON_AFTER


def _vocative_at_end(words: list[Word], hit: NameHit) -> bool:
    if words[hit.end - 1].possessive:
        return False
    first = words[hit.start]
    if _pause_before(first):
        return True
    return words[hit.start - 1].text not in MENTION_BEFORE
