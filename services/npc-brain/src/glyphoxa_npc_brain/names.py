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

    @property
    def bare(self) -> str:
        return self.text.removesuffix("'s")

    @property
    def possessive(self) -> bool:
        return self.text.endswith("'s")


def words_of(text: str) -> list[Word]:
    lowered = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    out: list[Word] = []
    last = 0
    for m in _WORD_RE.finditer(lowered):
        out.append(Word(m.group(), lowered[last : m.start()]))
        last = m.end()
    return out


@dataclass(frozen=True)
class NameForm:
    """One way of calling an NPC: its full name, an alias, or the bare surname."""

    npc: str  # NPC token
    words: tuple[str, ...]
    full: bool  # the whole name or an alias, not a bare part of it

    @property
    def text(self) -> str:
        return " ".join(self.words)


def name_forms(npc: Npc) -> list[NameForm]:
    forms: list[NameForm] = []
    seen: set[tuple[str, ...]] = set()

    def add(words: tuple[str, ...], full: bool) -> None:
        if words and words not in seen:
            seen.add(words)
            forms.append(NameForm(npc.token, words, full))

    for name in npc.names:
        words = tuple(w.text for w in words_of(name))
        add(words, True)
        if len(words) > 1:
            for part in (words[0], words[-1]):
                if part not in TITLES and len(part) >= 3:
                    add((part,), False)
    return forms


@dataclass(frozen=True)
class NameHit:
    form: NameForm
    start: int  # index of the first word of the hit
    end: int  # one past the last word
    score: float


def similarity(heard: str, name: str) -> float:
    """0..100: how plausibly ``heard`` is a misrecognition of ``name`` (both lower case)."""
    if heard == name:
        return 100.0
    return _fuzzy(heard, name)


@lru_cache(maxsize=4096)
def _fuzzy(heard: str, name: str) -> float:
    heard_words, name_words = heard.split(), name.split()
    if len(heard.replace(" ", "")) < 3 or len(name.replace(" ", "")) < 4:
        return 0.0
    if len(heard_words) == 1 and heard in COMMON_WORDS:
        return 0.0
    ratio = fuzz.ratio(heard, name)
    threshold = 85.0 if len(name) <= 4 else 80.0
    if ratio >= threshold:
        return ratio
    if ratio >= 60 and all(
        h == n or fuzz.ratio(h, n) >= 80 or _sounds_alike(h, n)
        for h, n in zip(heard_words, name_words, strict=False)
    ):
        return 85.0
    return 0.0


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
        score = similarity(heard, form.text)
        if score >= MATCH_THRESHOLD and _better(score, form, best):
            best = NameHit(form, start, end, score)
    return best


def best_name_ending_at(words: list[Word], end: int, forms: list[NameForm]) -> NameHit | None:
    """The best name whose last word is ``words[end - 1]``."""
    best: NameHit | None = None
    for form in forms:
        start = end - len(form.words)
        if start < 0:
            continue
        heard = _heard(words, start, end)
        score = similarity(heard, form.text)
        if score >= MATCH_THRESHOLD and _better(score, form, best):
            best = NameHit(form, start, end, score)
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
