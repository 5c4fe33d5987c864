"""The LLM provider base class: timeouts, error mapping, retries, cancel, usage."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from glyphoxa_npc_brain.llm.base import CallStats, ChatMessage
from glyphoxa_npc_brain.llm.fake import FakeLLM, fake_reply
from glyphoxa_runtime.providers import ProviderError, ProviderTimeout

pytestmark = pytest.mark.unit

HI = [ChatMessage("user", "Greta, how much for the longsword?")]


async def collect(llm, cancel: asyncio.Event | None = None, max_tokens: int = 60) -> str:
    out = []
    async with aclosing(
        llm.stream("persona", HI, max_tokens=max_tokens, seed=1, cancel=cancel or asyncio.Event())
    ) as deltas:
        async for delta in deltas:
            out.append(delta)
    return "".join(out)


async def test_fake_streams_a_deterministic_reply_token_by_token() -> None:
    llm = FakeLLM()
    text = await collect(llm)
    assert (
        text == fake_reply(HI) == "Aye, that I can do. The longsword, you say? Come back at dawn."
    )
    assert llm.last_stats.completion_tokens == len(text.split())
    assert fake_reply([ChatMessage("user", "Yes?")]) == "Aye, that I can do. Come back at dawn."


async def test_usage_is_reported_after_every_call() -> None:
    seen: list[tuple[str, CallStats]] = []
    llm = FakeLLM(on_usage=lambda name, stats: seen.append((name, stats)))
    await collect(llm, max_tokens=3)
    assert [(n, s.completion_tokens) for n, s in seen] == [("fake", 3)]
    assert seen[0][1].prompt_tokens > 0


async def test_cancel_stops_the_stream() -> None:
    llm = FakeLLM("one two three four five six", token_delay_s=0.01)
    cancel = asyncio.Event()
    out = []
    async with aclosing(llm.stream("p", HI, max_tokens=60, seed=1, cancel=cancel)) as deltas:
        async for delta in deltas:
            out.append(delta)
            if len(out) == 2:
                cancel.set()
    assert "".join(out) == "one two"


class SlowFirstToken(FakeLLM):
    def __init__(self, delay_s: float, **kwargs):
        super().__init__(**kwargs)
        self.delay_s, self.attempts = delay_s, 0

    async def _stream_impl(self, *args, **kwargs):  # type: ignore[override]
        self.attempts += 1
        await asyncio.sleep(self.delay_s)
        yield "late"


async def test_first_token_timeout_is_a_retryable_provider_timeout_tried_twice() -> None:
    llm = SlowFirstToken(10.0, first_token_timeout_s=0.05)
    with pytest.raises(ProviderTimeout) as info:
        await collect(llm)
    assert info.value.retryable and llm.attempts == 2


async def test_total_timeout_applies_after_the_first_token() -> None:
    llm = FakeLLM("a b c d e f g h", token_delay_s=0.05, timeout_s=0.12, first_token_timeout_s=1)
    with pytest.raises(ProviderTimeout):
        await collect(llm)


class Exploding(FakeLLM):
    async def _stream_impl(self, *args, **kwargs):  # type: ignore[override]
        yield "Aye"
        raise KeyError("vendor internals")


async def test_vendor_exceptions_become_provider_errors() -> None:
    llm = Exploding()
    with pytest.raises(ProviderError) as info:
        await collect(llm)
    assert not isinstance(info.value, ProviderTimeout)
    assert "KeyError" in str(info.value) and not info.value.retryable


async def test_errors_after_the_first_token_are_not_retried() -> None:
    class FlakyAfterStart(FakeLLM):
        attempts = 0

        async def _stream_impl(self, *args, **kwargs):  # type: ignore[override]
            self.attempts += 1
            yield "Aye"
            raise ProviderError("fake", "dropped", retryable=True)

    llm = FlakyAfterStart()
    with pytest.raises(ProviderError):
        await collect(llm)
    assert llm.attempts == 1


async def test_every_attempt_reports_its_usage_counted_by_the_provider() -> None:
    class CharTokens(FakeLLM):
        """A provider with its own tokenizer: one token per character, no prompt report."""

        failures = 1

        def count_tokens(self, text: str) -> int:
            return len(text)

        async def _stream_impl(self, system, messages, *, stats, **kwargs):  # type: ignore[override]
            if self.failures:
                self.failures -= 1
                raise ProviderError("fake", "503", retryable=True)
            stats.prompt_tokens = 42  # what the backend says it evaluated
            for piece in ("Aye", ", lad."):
                yield piece

    llm = CharTokens()
    calls: list[CallStats] = []
    out = []
    stream = llm.stream("persona", HI, max_tokens=60, seed=1, cancel=asyncio.Event(), calls=calls)
    async with aclosing(stream) as deltas:
        async for delta in deltas:
            out.append(delta)
    assert "".join(out) == "Aye, lad."
    assert [(c.prompt_tokens, c.completion_tokens, c.deltas) for c in calls] == [
        (0, 0, 0),  # the failed attempt evaluated nothing
        (42, len("Aye, lad."), 2),
    ]


async def test_default_token_count_is_words_of_prompt_and_reply() -> None:
    llm = FakeLLM("one two three")
    calls: list[CallStats] = []
    stream = llm.stream("be brief", HI, max_tokens=60, seed=1, cancel=asyncio.Event(), calls=calls)
    async with aclosing(stream) as deltas:
        async for _ in deltas:
            pass
    [call] = calls
    assert (call.prompt_tokens, call.completion_tokens) == (2 + len(HI[0].content.split()), 3)
