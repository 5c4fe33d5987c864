"""Making LLM text fit to be spoken: what a voice must not read out is removed.

Removed: stage directions (``*wipes the counter*``, ``(laughs)``, ``[sighs]``), markdown
(bold/italic markers, headings, list bullets, code ticks, links), emojis and pictographs,
URLs, a leading "Greta:" style speaker prefix and double quotes. What is left is
plain text with normalised spacing; a sentence that was only a stage direction becomes
empty and is not spoken at all.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"https?://\S+|www\.\S+")
_BOLD = re.compile(r"(\*\*|__)(.+?)\1", re.DOTALL)
_ACTION = re.compile(r"\*[^*]*\*|\*[^*]*$", re.DOTALL)
_UNDERSCORE_ITALIC = re.compile(r"(?<!\w)_(\S(?:.*?\S)?)_(?!\w)")
_PARENS = re.compile(r"\([^()]*\)|\([^()]*$")
_BRACKETS = re.compile(r"\[[^\[\]]*\]|\[[^\[\]]*$")
_HEADING = re.compile(r"^\s*#+\s*", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+\u2022]|\d+[.)])\s+", re.MULTILINE)
_ROLE_PREFIX = re.compile(r"^\s*(?:\*\*)?([A-Za-z][\w' .-]{0,40}?)(?:\*\*)?\s*:\s+")
_GENERIC_ROLES = frozenset(
    {"assistant", "npc", "answer", "response", "reply", "narrator", "ai", "player", "you"}
)
_DOUBLE_QUOTES = '"\u201c\u201d\u00ab\u00bb'


def clean_for_voice(text: str, names: Iterable[str] = ()) -> str:
    """``text`` without anything that must not be spoken; "" if nothing speakable is left."""
    text = _LINK.sub(r"\1", text)
    text = _URL.sub("", text)
    text = _BOLD.sub(r"\2", text)
    text = _ACTION.sub(" ", text)
    text = _UNDERSCORE_ITALIC.sub(r"\1", text)
    text = _PARENS.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("", text)
    text = text.replace("`", "").replace("~~", "").replace("*", "").replace("#", "")
    text = _strip_symbols(text)
    text = _strip_role_prefix(text, {n.lower() for n in names})
    return _tidy(text)


def _strip_symbols(text: str) -> str:
    """Emojis, pictographs, dingbats and their joiners/variation selectors."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("So", "Cs", "Co") or ch in "\u200d\ufe0f\ufe0e\u20e3":
            continue
        if 0x1F000 <= ord(ch) <= 0x1FAFF or 0x2600 <= ord(ch) <= 0x27BF:
            continue
        out.append(ch)
    return "".join(out)


def _strip_role_prefix(text: str, names: set[str]) -> str:
    m = _ROLE_PREFIX.match(text)
    if m and (m.group(1).strip().lower() in names or m.group(1).strip().lower() in _GENERIC_ROLES):
        return text[m.end() :]
    return text


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.!?;:\u2026])", r"\1", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    text = text.lstrip(",;:.-\u2014\u2013 ")
    text = "".join(ch for ch in text if ch not in _DOUBLE_QUOTES).strip()
    if not any(ch.isalnum() for ch in text):
        return ""
    return text
