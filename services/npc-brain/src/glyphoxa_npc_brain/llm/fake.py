"""An instant, deterministic LLM for tests and the bus benchmark (no model, no delay).

Its tokens are whitespace-separated words (the base class's ``count_tokens``)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from glyphoxa_npc_brain.llm.base import CallStats, ChatMessage, LLMCapabilities, LLMProvider

_STOPWORDS = frozenset(
    "the and for you your with that this what have could would should there their about from "
    "into will can how much many does when where which".split()
)


def fake_reply(messages: list[ChatMessage]) -> str:
    """ "Aye, that I can do. Come back at dawn." plus the most telling word of the line."""
    line = messages[-1].content if messages else ""
    line = line.split(":", 1)[1] if ":" in line[:40] else line
    words = [w for w in re.findall(r"[A-Za-z]{4,}", line) if w.lower() not in _STOPWORDS]
    topic = max(words, key=len).lower() if words else ""
    about = f" The {topic}, you say?" if topic else ""
    return f"Aye, that I can do.{about} Come back at dawn."


class FakeLLM(LLMProvider):
    name = "fake"
    capabilities = LLMCapabilities(streaming=True, prompt_cache=False, seeded=True, local=True)

    def __init__(self, reply: str | None = None, *, token_delay_s: float = 0.0, **kwargs: object):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._reply = reply
        self._delay = token_delay_s
        self.calls: list[tuple[str, list[ChatMessage], int, int]] = []

    async def _stream_impl(
        self,
        system: str,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        seed: int,
        cancel: asyncio.Event,
        stats: CallStats,
    ) -> AsyncIterator[str]:
        self.calls.append((system, list(messages), max_tokens, seed))
        stats.prompt_tokens = self.count_prompt_tokens(system, messages)
        text = self._reply if self._reply is not None else fake_reply(messages)
        for n, piece in enumerate(re.findall(r"\s*\S+", text)):
            if cancel.is_set() or n >= max_tokens:
                return
            yield piece
            await asyncio.sleep(self._delay)
