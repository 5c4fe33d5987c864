"""The cloud LLM providers (Gemini, OpenAI-compatible) through their real SDKs against local
fakes that speak the vendors' wire protocols: streaming, usage, errors, retries, timeouts,
cancellation reaching upstream, the API key kept out of logs and errors, and the fallback
from one to the other behind a circuit breaker."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from glyphoxa_events.models import Outcome
from glyphoxa_npc_brain.llm.base import ChatMessage, LLMProvider
from glyphoxa_npc_brain.llm.gemini import GeminiLLM, GeminiOptions
from glyphoxa_npc_brain.llm.openai_compat import OpenAICompatLLM, OpenAIOptions
from glyphoxa_npc_brain.llm.pool import LLMPool
from glyphoxa_npc_brain.metrics import BrainMetrics
from glyphoxa_runtime.providers import ProviderError, ProviderTimeout
from tests.support.fakes import gemini, openai_compat
from tests.support.fakes.llm_stream import DEFAULT_TEXT, FakeLLMServer, Reply
from tests.unit.brain.brain_fakes import brain_settings, make_handler, started, transcript_msg

pytestmark = pytest.mark.integration

PERSONA = "You are Greta, a gruff dwarven blacksmith."
HISTORY = [
    ChatMessage("user", "Greta, is the forge hot?"),
    ChatMessage("assistant", "Hot as dragon's breath."),
    ChatMessage("user", "How much for the longsword?"),
]


@dataclass(frozen=True)
class Vendor:
    name: str
    key: str
    fake: Callable[[], FakeLLMServer]
    llm: Callable[[str, str, dict[str, float]], LLMProvider]


def _gemini(url: str, key: str, timing: dict[str, float]) -> LLMProvider:
    return GeminiLLM(GeminiOptions(api_key=key, base_url=url, temperature=0.3), **timing)


def _openai(url: str, key: str, timing: dict[str, float]) -> LLMProvider:
    options = OpenAIOptions(base_url=url, model="llama-3.1-8b-instant", api_key=key,
                            temperature=0.3)
    return OpenAICompatLLM(options, **timing)


VENDORS = {
    "gemini": Vendor("gemini", gemini.API_KEY, gemini.FakeGemini, _gemini),
    "openai": Vendor("openai", openai_compat.API_KEY, openai_compat.FakeOpenAI, _openai),
}


@pytest.fixture(params=sorted(VENDORS))
def vendor(request: pytest.FixtureRequest) -> Vendor:
    return VENDORS[request.param]


@pytest.fixture
async def fake(vendor: Vendor) -> AsyncIterator[FakeLLMServer]:
    async with vendor.fake() as server:
        yield server


@pytest.fixture
async def make_llm(vendor: Vendor, fake: FakeLLMServer) -> AsyncIterator[Callable[..., LLMProvider]]:
    made: list[LLMProvider] = []

    def make(key: str | None = None, **timing: float) -> LLMProvider:
        made.append(vendor.llm(fake.url, vendor.key if key is None else key, timing))
        return made[-1]

    yield make
    for llm in made:
        await llm.close()


async def collect(llm: LLMProvider, cancel: asyncio.Event | None = None,
                  arrivals: list[float] | None = None) -> list[str]:
    out: list[str] = []
    stream = llm.stream(PERSONA, HISTORY, max_tokens=60, seed=7, cancel=cancel or asyncio.Event())
    async with aclosing(stream) as deltas:
        async for delta in deltas:
            out.append(delta)
            if arrivals is not None:
                arrivals.append(time.monotonic())
    return out


def messages_of(exc: BaseException) -> str:
    """Every message of an exception and its causes."""
    text = ""
    while exc is not None:
        text += f"{exc!s} {exc!r} "
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return text


async def test_the_reply_streams_chunk_by_chunk_with_the_vendors_usage(fake, make_llm) -> None:
    fake.script(Reply(chunks=4, chunk_delay_s=0.15, prompt_tokens=123, completion_tokens=19))
    llm = make_llm()
    assert llm.capabilities.local is False and llm.capabilities.streaming
    arrivals: list[float] = []
    deltas = await collect(llm, arrivals=arrivals)
    seen = fake.requests[0]
    assert "".join(deltas) == DEFAULT_TEXT and len(deltas) == 4
    assert arrivals[0] < seen.last_chunk_at - 0.3  # the first words came before the last
    assert (llm.last_stats.prompt_tokens, llm.last_stats.completion_tokens) == (123, 19)
    assert seen.finished and not seen.client_gone


async def test_gemini_request_carries_persona_history_and_generation_config() -> None:
    async with gemini.FakeGemini() as fake:
        llm = _gemini(fake.url, gemini.API_KEY, {})
        try:
            await collect(llm)
        finally:
            await llm.close()
    seen = fake.requests[0]
    assert seen.path == "/v1/models/gemini-2.5-flash:streamGenerateContent"  # the SDK's version
    assert seen.query == {"alt": "sse"} and seen.model == "gemini-2.5-flash"
    assert seen.system == PERSONA
    assert seen.contents == [("user", "Greta, is the forge hot?"),
                             ("model", "Hot as dragon's breath."),
                             ("user", "How much for the longsword?")]
    assert seen.generation["maxOutputTokens"] == 60 and seen.generation["temperature"] == 0.3
    assert gemini.thinking_budget(seen) == 0  # thinking off: no multi-second thought tail


async def test_openai_request_carries_persona_history_and_sampling() -> None:
    async with openai_compat.FakeOpenAI() as fake:
        llm = _openai(fake.url, openai_compat.API_KEY, {})
        try:
            await collect(llm)
        finally:
            await llm.close()
    seen = fake.requests[0]
    assert (seen.path, seen.model, seen.system) == (
        "/v1/chat/completions", "llama-3.1-8b-instant", PERSONA)
    assert seen.contents == [(m.role, m.content) for m in HISTORY]
    assert seen.generation == {"max_tokens": 60, "temperature": 0.3, "seed": 7, "stream": True,
                               "stream_options": {"include_usage": True}}


async def test_a_local_server_needs_no_key() -> None:
    async with openai_compat.FakeOpenAI(api_key=None) as fake:
        llm = _openai(fake.url, "", {})
        try:
            assert "".join(await collect(llm)) == DEFAULT_TEXT
        finally:
            await llm.close()


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_retryable_status_is_tried_twice_then_fails_retryable(
    fake, make_llm, status: int
) -> None:
    fake.script(Reply(status=status), Reply(status=status))
    with pytest.raises(ProviderError) as info:
        await collect(make_llm())
    assert info.value.retryable and f"HTTP {status}" in str(info.value)
    assert len(fake.requests) == 2  # the base class's retry; the SDK's own are off


async def test_a_retry_after_a_rate_limit_answers(fake, make_llm) -> None:
    fake.script(Reply(status=429))
    assert "".join(await collect(make_llm())) == DEFAULT_TEXT
    assert [r.status for r in fake.requests] == [429, 200]


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_a_permanent_status_is_not_retried(fake, make_llm, vendor, status: int) -> None:
    fake.script(Reply(status=status))
    with pytest.raises(ProviderError) as info:
        await collect(make_llm())
    assert not info.value.retryable and f"HTTP {status}" in str(info.value)
    assert len(fake.requests) == 1 and vendor.key not in messages_of(info.value)


async def test_a_wrong_key_is_refused_clearly_without_showing_it(fake, make_llm, caplog) -> None:
    wrong = "sk-wrong0key0that0must0never0be0shown0123"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderError) as info:
        await collect(make_llm(key=wrong))
    assert not info.value.retryable and len(fake.requests) == 1
    assert "API key" in str(info.value)
    assert wrong not in messages_of(info.value) and wrong not in caplog.text


async def test_the_key_never_reaches_a_log_line(fake, make_llm, vendor, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    llm = make_llm()
    await collect(llm)
    fake.script(Reply(status=429), Reply(status=500))
    with pytest.raises(ProviderError) as info:
        await collect(llm)
    assert caplog.records  # the retry was logged (and the SDKs' debug lines were captured)
    logged = caplog.text + " ".join(str(r.args) for r in caplog.records)
    assert vendor.key not in logged and vendor.key not in messages_of(info.value)


async def test_no_first_token_in_time_is_a_timeout_that_hangs_up(fake, make_llm) -> None:
    fake.script(Reply(first_chunk_delay_s=5), Reply(first_chunk_delay_s=5))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await collect(make_llm(first_token_timeout_s=0.3))
    assert time.monotonic() - started < 2
    for seen in fake.requests:
        assert await asyncio.to_thread(seen.ended.wait, 2) and seen.client_gone
    assert len(fake.requests) == 2


async def test_a_cancel_mid_stream_closes_the_upstream_connection(fake, make_llm) -> None:
    fake.script(Reply(chunks=5, chunk_delay_s=1.0))
    cancel = asyncio.Event()
    loop = asyncio.get_running_loop()
    stream = make_llm().stream(PERSONA, HISTORY, max_tokens=60, seed=1, cancel=cancel)
    out: list[str] = []
    async with aclosing(stream) as deltas:
        async for delta in deltas:
            out.append(delta)
            arrived = time.monotonic()
            loop.call_later(0.05, cancel.set)  # a barge-in while the next chunk is awaited
    seen = fake.requests[0]
    assert len(out) == 1 and time.monotonic() - arrived < 0.5  # no wait for the next chunk
    assert await asyncio.to_thread(seen.ended.wait, 2)
    assert seen.client_gone and not seen.finished


async def test_a_consumer_that_stops_reading_closes_the_upstream_connection(
    fake, make_llm
) -> None:
    fake.script(Reply(chunks=5, chunk_delay_s=0.2))
    stream = make_llm().stream(PERSONA, HISTORY, max_tokens=60, seed=1, cancel=asyncio.Event())
    async with aclosing(stream) as deltas:
        async for _ in deltas:
            break  # the sentence cap was reached
    seen = fake.requests[0]
    assert await asyncio.to_thread(seen.ended.wait, 2)
    assert seen.client_gone and not seen.finished


async def test_a_connection_dropped_mid_stream_is_a_retryable_error(fake, make_llm) -> None:
    fake.script(Reply(chunks=4, drop_after_chunks=2))
    arrived: list[str] = []
    with pytest.raises(ProviderError) as info:
        stream = make_llm().stream(PERSONA, HISTORY, max_tokens=60, seed=1,
                                   cancel=asyncio.Event())
        async with aclosing(stream) as deltas:
            async for delta in deltas:
                arrived.append(delta)
    assert info.value.retryable and arrived
    assert len(fake.requests) == 1  # text was already spoken: not tried again


async def test_a_failing_gemini_falls_back_to_openai_until_its_breaker_stops_calling_it(
    caplog,
) -> None:
    """The pool and chain over the real SDKs: Gemini answers 503 (retried once each turn),
    the OpenAI-compatible fallback speaks, the turn event names it, and once Gemini's
    breaker is open it gets no more requests; the keys reach no log line."""
    caplog.set_level(logging.DEBUG)
    async with gemini.FakeGemini(default=Reply(status=503)) as down, \
            openai_compat.FakeOpenAI() as backup:
        settings = brain_settings(
            llm_provider="gemini", gemini_api_key=gemini.API_KEY, gemini_base_url=down.url,
            llm_fallback="openai", openai_base_url=backup.url, openai_model="llama-3.1-8b-instant",
            openai_api_key=openai_compat.API_KEY, breaker_failures=2)
        metrics = BrainMetrics(registry=CollectorRegistry())
        pool = LLMPool(settings, metrics=metrics)
        await pool.start()
        handler, sink, _ = make_handler(pool)
        try:
            await handler.on_control(started())
            for n in range(3):
                await handler.on_message(transcript_msg("Greta, the longsword?", utt=f"alex-{n}"))
                turn = sink.turn(f"alex-{n}")
                assert (turn.outcome, turn.llm_provider, turn.reply_text) == (
                    Outcome.answered, "openai", DEFAULT_TEXT)
        finally:
            await handler.close()
            described = pool.describe()
            await pool.close()
    assert [r.status for r in down.requests] == [503] * 4  # 2 turns x (call + retry), then none
    assert len(backup.requests) == 3 and all(r.key_ok for r in backup.requests)
    assert [(p["provider"], p["breaker"]) for p in described["providers"]] == [
        ("gemini", "open"), ("openai", "closed")]
    usage = [u.provider for u, _ in sink.usage() if u.metric == "llm_tokens_in"]
    assert usage == ["gemini", "gemini", "openai", "gemini", "gemini", "openai", "openai"]
    assert metrics.registry.get_sample_value(
        "glyphoxa_npc_brain_llm_tokens_total", {"provider": "openai", "direction": "in"}) == 3 * 31
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "passed over" in logged and "circuit breaker open" in logged
    assert gemini.API_KEY not in logged and openai_compat.API_KEY not in logged
