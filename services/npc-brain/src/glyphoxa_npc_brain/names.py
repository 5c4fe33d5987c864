"""Finding an NPC's name in a transcript despite speech-recognition misspellings.

A heard word matches a name when it is the name, or close enough in spelling
(rapidfuzz ratio) or in sound (jellyfish metaphone / NYSIIS) to be a plausible
mishearing: "Gretta" and "Aldrich" match, "Captain Boss" matches "Captain Voss".
Ordinary English words ("great", "boss") only ever match by exact spelling, so a
name that sounds like a common word does not turn every sentence into an address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import jellyfish
from rapidfuzz import fuzz

from glyphoxa_campaign import Npc
from glyphoxa_events.models import NameKind, NameMatch
from glyphoxa_npc_brain.wordlist import COMMON_WORDS

TITLES = frozenset(
    "captain capt lord lady sir dame master mistress mister mr mrs ms miss madam madame "
    "brother sister father mother old young the of von van de del king queen prince princess "
    "duke duchess baron baroness count countess doctor dr professor lieutenant sergeant "
    "commander general chief elder saint st uncle aunt granny grandpa".split()
)
"""Words of a multi-word name that are not used on their own to call the NPC."""

_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Word:
    """One spoken word with the punctuation written before it."""

    text: str  # lower case, possessive "'s" kept
    before: str  # the characters between the previous word and this one
    start: int = 0  # where the word is in the original line (character offsets)
    end: int = 0

    @property
    def bare(self) -> str:
        return self.text.removesuffix("'s")

    @property
    def possessive(self) -> bool:
        return self.text.endswith("'s")


def words_of(text: str) -> list[Word]:
    lowered, origin = _lowered(text)
    out: list[Word] = []
    last = 0
    for m in _WORD_RE.finditer(lowered):
        out.append(Word(m.group(), lowered[last : m.start()], origin[m.start()],
                        origin[m.end() - 1] + 1))
        last = m.end()
    return out


def _lowered(text: str) -> tuple[str, list[int]]:
    """``text`` in lower case with curly quotes straightened, and for each of its characters
    the offset in ``text`` it came from (lower-casing may lengthen a character: "İ")."""
    if text.isascii():
        return text.lower(), list(range(len(text)))
    chars: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text.replace("\u2019", "'").replace("\u2018", "'")):
        low = ch.lower()
        chars.append(low)
        origin.extend([i] * len(low))
    return "".join(chars), origin


@dataclass(frozen=True)
class NameForm:
    """One way of calling an NPC: its full name, an alias, or one word of either."""

    npc: str  # NPC token
    words: tuple[str, ...]
    kind: NameKind  # name, alias, or part (a bare word of a longer name)
    written: str  # as the campaign spells it ("Captain Voss"; "Voss" for its part)

    @property
    def full(self) -> bool:
        """The whole name or an alias, not a bare part of it."""
        return self.kind != "part"

    @property
    def text(self) -> str:
        return " ".join(self.words)


def name_forms(npc: Npc) -> list[NameForm]:
    forms: list[NameForm] = []
    seen: set[tuple[str, ...]] = set()

    def add(words: tuple[str, ...], kind: NameKind, written: str) -> None:
        if words and words not in seen:
            seen.add(words)
            forms.append(NameForm(npc.token, words, kind, written))

    for n, name in enumerate(npc.names):
        spoken = words_of(name)
        words = tuple(w.text for w in spoken)
        add(words, "name" if n == 0 else "alias", name)
        if len(words) > 1:
            for part in (spoken[0], spoken[-1]):
                if part.text not in TITLES and len(part.text) >= 3:
                    add((part.text,), "part", name[part.start : part.end])
    return forms


@dataclass(frozen=True)
class NameHit:
    form: NameForm
    start: int  # index of the first word of the hit
    end: int  # one past the last word
    score: float
    match: NameMatch = NameMatch.exact


def similarity(heard: str, name: str) -> float:
    """0..100: how plausibly ``heard`` is a misrecognition of ``name`` (both lower case)."""
    return name_match(heard, name)[0]


def name_match(heard: str, name: str) -> tuple[float, NameMatch]:
    """``similarity`` and how it was found: the same spelling, a close spelling (the score
    is rapidfuzz's ratio), or a word that needed its sound to match (the score is 85)."""
    if heard == name:
        return 100.0, NameMatch.exact
    return _fuzzy(heard, name)


_NO_MATCH = (0.0, NameMatch.fuzzy)


@lru_cache(maxsize=4096)
def _fuzzy(heard: str, name: str) -> tuple[float, NameMatch]:
    heard_words, name_words = heard.split(), name.split()
    if len(heard.replace(" ", "")) < 3 or len(name.replace(" ", "")) < 4:
        return _NO_MATCH
    if len(heard_words) == 1 and heard in COMMON_WORDS:
        return _NO_MATCH
    ratio = fuzz.ratio(heard, name)
    threshold = 85.0 if len(name) <= 4 else 80.0
    if ratio >= threshold:
        return ratio, NameMatch.fuzzy
    if ratio < 60:
        return _NO_MATCH
    by_sound = False
    for h, n in zip(heard_words, name_words, strict=False):
        if h == n or fuzz.ratio(h, n) >= 80:
            continue
        if not _sounds_alike(h, n):
            return _NO_MATCH
        by_sound = True
    return 85.0, NameMatch.phonetic if by_sound else NameMatch.fuzzy


def _sounds_alike(heard: str, name: str) -> bool:
    return jellyfish.metaphone(heard) == jellyfish.metaphone(name) or jellyfish.nysiis(
        heard
    ) == jellyfish.nysiis(name)


MATCH_THRESHOLD = 80.0


def best_name_at(words: list[Word], start: int, forms: list[NameForm]) -> NameHit | None:
    """The best name whose words begin at ``words[start]``."""
    best: NameHit | None = None
    for form in forms:
        end = start + len(form.words)
        if end > len(words):
            continue
        heard = _heard(words, start, end)
        score, how = name_match(heard, form.text)
        if score >= MATCH_THRESHOLD and _better(score, form, best):
            best = NameHit(form, start, end, score, how)
    return best


def best_name_ending_at(words: list[Word], end: int, forms: list[NameForm]) -> NameHit | None:
    """The best name whose last word is ``words[end - 1]``."""
    best: NameHit | None = None
    for form in forms:
        start = end - len(form.words)
        if start < 0:
            continue
        heard = _heard(words, start, end)
        score, how = name_match(heard, form.text)
        if score >= MATCH_THRESHOLD and _better(score, form, best):
            best = NameHit(form, start, end, score, how)
    return best


def _heard(words: list[Word], start: int, end: int) -> str:
    """The words ``start:end`` as one string, a possessive "'s" on the last one dropped."""
    return (
        " ".join(w.text for w in words[start : end - 1])
        + (" " if end - start > 1 else "")
        + words[end - 1].bare
    )


def _better(score: float, form: NameForm, best: NameHit | None) -> bool:
    if best is None:
        return True
    if score != best.score:
        return score > best.score
    return len(form.words) > len(best.form.words)


def mentions(words: list[Word], forms: list[NameForm]) -> list[NameHit]:
    """Every place a name occurs in the line (used for third-person mentions)."""
    hits: list[NameHit] = []
    i = 0
    while i < len(words):
        hit = best_name_at(words, i, forms)
        if hit is not None:
            hits.append(hit)
            i = hit.end
        else:
            i += 1
    return hits
