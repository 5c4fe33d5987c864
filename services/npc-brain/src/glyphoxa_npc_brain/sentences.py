"""Cutting a streamed reply into sentences, each handed on as soon as it is complete.

A sentence ends at ``.``, ``!``, ``?`` (or runs like ``!?``) followed by whitespace, not
after an abbreviation ("Mr.", "St.") or an initial ("J."), and not inside an open
``(...)``, ``[...]`` or ``*...*`` (those are stage directions, removed as a whole later).
An ellipsis ends a sentence only when what follows starts like a new sentence
("Well... I suppose" is one sentence, "Wait... No!" two), so it waits for the next
word. A line break ends a sentence too, and an overlong run without punctuation is cut
at a comma so speech synthesis can start.

With ``first_clause`` the reply's first piece may be a clause: "Aye, | I can mend it by
morning." is cut at the comma (or ``;``, ``:``, a dash) when the clause is complete before the
sentence is, so speech synthesis starts on it while the model writes the rest. Only the first
piece, only at depth 0 (not inside a stage direction), and never on an apology opener ("I'm
sorry, but ...": it must stay whole for the out-of-character check).
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset(
    "mr mrs ms dr st sr jr mt ft capt cpt lt sgt col gen maj cmdr prof rev fr vs etc e.g i.e "
    "approx vol ch fig dept est ave rd".split()
)

_END = re.compile(r"([.!?\u2026]+)([\"'\u201d\u2019)\]]*)(\s+)")
_CLAUSE = re.compile(r"[,;:](?=\s)|\s[\u2014\u2013-](?=\s)")
_APOLOGY = re.compile(r"^\W*(i'?m sorry|i am sorry|i apologi[sz]e|sorry|as an ai|unfortunately)\b",
                      re.IGNORECASE)
_NEWLINE = re.compile(r"\n+")


class SentenceSplitter:
    def __init__(self, max_chars: int = 240, first_clause: bool = False):
        self._buf = ""
        self._max = max_chars
        self._clause = first_clause  # the next cut may be at a clause (until the first cut)

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
                self._clause = False
        return out

    def flush(self) -> str:
        """The unfinished remainder at the end of the stream (may be empty)."""
        rest, self._buf = self._buf.strip(), ""
        return rest

    def _next_cut(self) -> int | None:
        clause = self._clause_cut() if self._clause else None
        cut = self._sentence_cut()
        return clause if clause is not None and (cut is None or clause < cut) else cut

    def _sentence_cut(self) -> int | None:
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

    def _clause_cut(self) -> int | None:
        """The end of a first clause that is complete (text follows its mark), or None."""
        if _APOLOGY.match(self._buf):
            self._clause = False
            return None
        for m in _CLAUSE.finditer(self._buf):
            head = self._buf[: m.end()]
            if _depth(head) == 0 and re.search(r"\w", head) and self._buf[m.end():].strip():
                return m.end()
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
