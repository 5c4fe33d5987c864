"""Cutting a streamed reply into sentences, each handed on as soon as it is complete.

A sentence ends at ``.``, ``!``, ``?`` (or runs like ``!?``) followed by whitespace, not
after an abbreviation ("Mr.", "St.") or an initial ("J."), and not inside an open
``(...)``, ``[...]`` or ``*...*`` (those are stage directions, removed as a whole later).
An ellipsis ends a sentence only when what follows starts like a new sentence
("Well... I suppose" is one sentence, "Wait... No!" two), so it waits for the next
word. A line break ends a sentence too, and an overlong run without punctuation is cut
at a comma so speech synthesis can start.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset(
    "mr mrs ms dr st sr jr mt ft capt cpt lt sgt col gen maj cmdr prof rev fr vs etc e.g i.e "
    "approx vol ch fig dept est ave rd".split()
)

_END = re.compile(r"([.!?\u2026]+)([\"'\u201d\u2019)\]]*)(\s+)")
_NEWLINE = re.compile(r"\n+")


class SentenceSplitter:
    def __init__(self, max_chars: int = 240):
        self._buf = ""
        self._max = max_chars

    def feed(self, text: str) -> list[str]:
        """Add streamed text; return the sentences it completed."""
        self._buf = (self._buf + text).lstrip()
        out: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                break
            sentence, self._buf = self._buf[:cut].strip(), self._buf[cut:].lstrip()
            if sentence:
                out.append(sentence)
        return out

    def flush(self) -> str:
        """The unfinished remainder at the end of the stream (may be empty)."""
        rest, self._buf = self._buf.strip(), ""
        return rest

    def _next_cut(self) -> int | None:
        for m in _END.finditer(self._buf):
            verdict = self._ends_sentence(m)
            if verdict is None:
                return None  # an ellipsis at the end: wait for the next word
            if verdict:
                return m.end(2)
        newline = _NEWLINE.search(self._buf)
        if (
            newline
            and self._buf[: newline.start()].strip()
            and _depth(self._buf[: newline.start()]) == 0
        ):
            return newline.end()
        if len(self._buf) > self._max:
            return _soft_cut(self._buf, self._max)
        return None

    def _ends_sentence(self, m: re.Match[str]) -> bool | None:
        head = self._buf[: m.start()]
        if _depth(head + m.group(1)) != 0:
            return False
        marks = m.group(1)
        if marks == ".":
            word = re.search(r"([\w.'\u2019]+)$", head)
            last = word.group(1).lower() if word else ""
            if last in ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
                return False
            if re.fullmatch(r"(\w\.)+\w", last):  # "e.g", "U.S"
                return False
        if (set(marks) <= {".", "\u2026"} and len(marks) > 1) or marks == "\u2026":
            after = self._buf[m.end() :]
            if not after:
                return None
            return not after[0].islower()
        return True


def _depth(text: str) -> int:
    """How many stage-direction spans are still open at the end of ``text``."""
    parens = text.count("(") - text.count(")")
    brackets = text.count("[") - text.count("]")
    stars = text.replace("**", "").count("*") % 2
    return max(parens, 0) + max(brackets, 0) + stars


def _soft_cut(text: str, limit: int) -> int:
    for sep in (";", ",", " \u2014", " -", " "):
        pos = text.rfind(sep, 0, limit)
        if pos > limit // 3:
            return pos + len(sep)
    return limit
