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

Every decision carries its explanation (``RoutingExplained``, recorded in the turn event):
the name that matched, where and how, the mention that made a line table talk and why it
did not count, or how long after the last addressed line a follow-up came.
"""

from __future__ import annotations

from dataclasses import dataclass

from glyphoxa_campaign import Campaign, Npc
from glyphoxa_events.models import NameMatch, RouteKind, RoutingExplained
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

Route = RouteKind


@dataclass(frozen=True)
class RoutingDecision:
    explained: RoutingExplained

    @property
    def kind(self) -> Route:
        return self.explained.kind

    @property
    def npc(self) -> str | None:
        """The addressed NPC's token."""
        return self.explained.npc

    @property
    def reason(self) -> str:
        return self.explained.why

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
            return _decision(Route.none, why="empty transcript")
        hit = self._named_at_start(words)
        if hit is not None:
            return self._named(Route.name_start, hit, words, text)
        hit = self._named_at_end(words)
        if hit is not None:
            return self._named(Route.name_end, hit, words, text)
        return self._unnamed(text, words, speech_end_ns, last)

    def _named(self, kind: Route, hit: NameHit, words: list[Word], text: str) -> RoutingDecision:
        where = "start" if kind is Route.name_start else "end"
        return _decision(kind, npc=hit.form.npc, **_name_fields(hit, words, text),
                         why=f"named at the {where}: {_heard_as(hit, words, text)}")

    def _unnamed(
        self, text: str, words: list[Word], speech_end_ns: int, last: LastAddress | None
    ) -> RoutingDecision:
        since = self._since_last(last, speech_end_ns)
        mentioned = mentions(words, self._forms)
        if mentioned:
            hit = mentioned[0]
            return _decision(
                Route.table_talk, mentioned=hit.form.npc, **_name_fields(hit, words, text), **since,
                why=f"talks about {hit.form.written}, not to: {self._not_addressing(words, hit, text)}")
        cue = table_talk_cue(text)
        if cue is not None:
            return _decision(Route.table_talk, cue=cue.kind, matched=cue.text[:200], **since,
                             why=str(cue))
        if last is not None and self._can_follow_up(last, speech_end_ns):
            return _decision(Route.followup, npc=last.npc, **since,
                             why=f"follow-up to {self._npc(last.npc).name}")
        listening = [n for n in self.campaign.npcs if not n.address_only]
        if len(self.campaign.npcs) == 1 and listening:
            return _decision(Route.only_npc, npc=listening[0].token, **since,
                             why="the only NPC present")
        return _decision(Route.none, **since, why=self._nobody(last, speech_end_ns))

    def _since_last(self, last: LastAddress | None, speech_end_ns: int) -> dict[str, object]:
        if last is None:
            return {}
        return {"last_npc": last.npc, "window_ms": self.window_ns // 1_000_000,
                "since_last_ms": abs(speech_end_ns - last.speech_end_ns) // 1_000_000}

    def _nobody(self, last: LastAddress | None, speech_end_ns: int) -> str:
        """Why an unnamed line that is not table talk goes to nobody."""
        npcs = self.campaign.npcs
        if len(npcs) == 1 and npcs[0].address_only:
            return f"no NPC named, and {npcs[0].name}, the only NPC, answers only when named"
        if last is None:
            return "no NPC named and no conversation going on"
        npc = self.campaign.npc(last.npc)
        if npc is None:
            return "no NPC named, and the NPC addressed last is not in the campaign"
        if npc.address_only:
            return f"no NPC named, and {npc.name}, addressed last, answers only when named"
        ago = abs(speech_end_ns - last.speech_end_ns) / 1e9
        return (f"no NPC named, and {npc.name} was addressed {ago:.1f} s before, past the "
                f"{self.window_ns / 1e9:g} s follow-up window")

    def _not_addressing(self, words: list[Word], hit: NameHit, text: str) -> str:
        """Why a name in the line does not address its NPC."""
        heard = repr(text[words[hit.start].start : words[hit.end - 1].end])
        if words[hit.end - 1].possessive:
            return f"{heard} is a possessive"
        if hit.start in self._start_positions(words) and hit.end < len(words):
            return f"{heard} is followed by {words[hit.end].text!r}"
        if hit.start > 0 and hit.end == self._line_end(words):
            return f"{heard} comes after {words[hit.start - 1].text!r}"
        return f"{heard} is named in the middle of the line, neither at its start nor its end"

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
        for start in self._start_positions(words):
            hit = best_name_at(words, start, self._forms)
            if hit is not None:
                return hit if _vocative_at_start(words, hit) else None
        return None

    @staticmethod
    def _start_positions(words: list[Word]) -> list[int]:
        """Where a name may begin to count as said at the start: after up to
        ``_MAX_INTERJECTIONS`` interjections ("okay so hey Greta")."""
        positions = [0]
        for _ in range(_MAX_INTERJECTIONS):
            skip = _interjection_at(words, positions[-1])
            if not skip:
                break
            positions.append(positions[-1] + skip)
        return positions

    @staticmethod
    def _line_end(words: list[Word]) -> int:
        """Where a name must end to count as said at the end: before trailing courtesies
        (", please")."""
        end = len(words)
        while (
            end > 1 and words[end - 1].text in TRAILING_COURTESY and _pause_before(words[end - 1])
        ):
            end -= 1
        return end

    def _named_at_end(self, words: list[Word]) -> NameHit | None:
        hit = best_name_ending_at(words, self._line_end(words), self._forms)
        if hit is None or hit.start == 0 or not _vocative_at_end(words, hit):
            return None
        return hit


def _decision(kind: Route, **fields: object) -> RoutingDecision:
    return RoutingDecision(RoutingExplained(kind=kind, **fields))


def _name_fields(hit: NameHit, words: list[Word], text: str) -> dict[str, object]:
    """Which name matched, where in ``text`` and how (``RoutingExplained``'s name fields)."""
    start, end = words[hit.start].start, words[hit.end - 1].end
    return {"name": hit.form.written[:200], "name_kind": hit.form.kind,
            "matched": text[start:end][:200], "word": hit.start, "start": start, "end": end,
            "match": hit.match, "score": round(hit.score, 1)}


def _heard_as(hit: NameHit, words: list[Word], text: str) -> str:
    """'Greta' or 'Gretta' (fuzzy 91 for 'Greta')."""
    heard = text[words[hit.start].start : words[hit.end - 1].end]
    if hit.match is NameMatch.exact:
        return repr(heard)
    return f"{heard!r} ({hit.match.value} {hit.score:.0f} for {hit.form.written!r})"


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
