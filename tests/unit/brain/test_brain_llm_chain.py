"""The LLM provider chain of a turn: fallback before the first word (never after, never on a
cancel), a circuit breaker per provider, per-campaign and per-NPC choices, and the pool
that makes one provider per (provider, model, temperature, key) with keys kept secret."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from glyphoxa_campaign import Campaign, LLMSpec
from glyphoxa_events.models import Flush, Outcome
from glyphoxa_npc_brain.llm.base import LLMProvider
from glyphoxa_npc_brain.llm.chain import LLMChoice, choices_for
from glyphoxa_npc_brain.llm.fake import FakeLLM
from glyphoxa_npc_brain.llm.pool import LLMPool
from glyphoxa_runtime.providers import ProviderError, ProviderTimeout, ProviderUnavailable
from tests.unit.brain.brain_fakes import (
    PERSONAS,
    brain_settings,
    make_handler,
    make_pool,
    metric,
    started,
    transcript_msg,
)

pytestmark = pytest.mark.unit

BUSY = ProviderError("gemini", "HTTP 503: overloaded", retryable=True)
GEMINI_KEY = "AIzaConfiguredKey0123456789"
TENANT_KEY = "AIzaTenantOwnKey9876543210"
TWO = {"llm_provider": "gemini", "gemini_api_key": GEMINI_KEY, "llm_fallback": "fake"}


class Scripted(FakeLLM):
    """A fake under any provider's name that fails as told: ``error`` before any text, or
    after ``first`` was streamed."""

    def __init__(self, name: str, error: ProviderError | None = None, *, first: str = "",
                 reply: str | None = None, **kwargs: object):
        super().__init__(reply, **kwargs)
        self.name, self.error, self.first, self.attempts = name, error, first, 0

    async def _stream_impl(self, system, messages, *, max_tokens, seed, cancel, stats):
        self.attempts += 1
        if self.error is None:
            async for piece in super()._stream_impl(system, messages, max_tokens=max_tokens,
                                                    seed=seed, cancel=cancel, stats=stats):
                yield piece
            return
        stats.prompt_tokens = 5
        if self.first:
            yield self.first
        raise self.error


class Silent(FakeLLM):
    """Thinks until cancelled, never says a word."""

    def __init__(self, name: str = "gemini") -> None:
        super().__init__()
        self.name, self.attempts = name, 0

    async def _stream_impl(self, system, messages, *, max_tokens, seed, cancel, stats):
        self.attempts += 1
        await cancel.wait()
        return
        yield ""  # pragma: no cover


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def two_providers(gemini: LLMProvider, fake: LLMProvider | None = None, clock: Clock | None = None,
                  **settings: object) -> LLMPool:
    """gemini first, the fake as its fallback."""
    pool = make_pool(fake or FakeLLM(), settings=brain_settings(**{**TWO, **settings}),
                     gemini=gemini)
    if clock is not None:
        pool._clock = clock
    return pool


async def turn(handler, sink, utt: str, text: str = "Greta, how much for the axe?"):
    await handler.on_message(transcript_msg(text, utt=utt))
    return sink.turn(utt)


# --- fallback ----------------------------------------------------------------------------


async def test_a_retryable_error_before_any_text_falls_back_to_the_next_provider(caplog) -> None:
    gemini, fake = Scripted("gemini", BUSY), FakeLLM()
    handler, sink, metrics = make_handler(two_providers(gemini, fake))
    await handler.on_control(started())
    caplog.set_level(logging.WARNING)
    ended = await turn(handler, sink, "alex-1")

    assert (ended.outcome, ended.llm_provider) == (Outcome.answered, "fake")
    assert ended.reply_text.startswith("Aye, that I can do.")
    assert gemini.attempts == 2  # its own retry first, then the fallback
    warning = next(r for r in caplog.records if "passed over" in r.getMessage())
    assert "gemini" in warning.getMessage() and "trying fake" in warning.getMessage()
    assert "HTTP 503" in warning.getMessage() and warning.turn == "alex-1"
    assert metric(metrics, "glyphoxa_npc_brain_llm_fallbacks_total", provider="gemini",
                  reason="error") == 1


async def test_usage_is_counted_under_the_provider_that_made_each_attempt() -> None:
    handler, sink, metrics = make_handler(two_providers(Scripted("gemini", BUSY)))
    await handler.on_control(started())
    await turn(handler, sink, "alex-1")

    usage = [(u.key, u.provider) for u, _ in sink.usage() if u.metric == "llm_tokens_in"]
    assert usage == [("llm:alex-1:0", "gemini"), ("llm:alex-1:1", "gemini"),
                     ("llm:alex-1:2", "fake")]
    tokens = "glyphoxa_npc_brain_llm_tokens_total"
    assert metric(metrics, tokens, provider="gemini", direction="in") == 10
    assert metric(metrics, tokens, provider="fake", direction="out") > 0
    assert metric(metrics, tokens, provider="gemini", direction="out") == 0


async def test_an_error_after_text_ends_the_turn_without_splicing_another_reply() -> None:
    gemini = Scripted("gemini", ProviderError("gemini", "connection lost", retryable=True),
                      first="Fifty gold, no less. ")
    fake = FakeLLM()
    handler, sink, _ = make_handler(two_providers(gemini, fake))
    await handler.on_control(started())
    ended = await turn(handler, sink, "alex-1")

    assert ended.outcome == Outcome.failed and "connection lost" in ended.reason
    assert (ended.reply_text, ended.llm_provider) == ("Fifty gold, no less.", "gemini")
    assert fake.calls == [] and gemini.attempts == 1  # no retry after text either
    assert [(c.text, c.final) for c in sink.chunks("alex-1")] == [
        ("Fifty gold, no less.", False), ("", True)]


async def test_a_cancel_never_falls_back() -> None:
    gemini, fake = Silent(), FakeLLM()
    pool = two_providers(gemini, fake)
    handler, sink, _ = make_handler(pool)
    await handler.on_control(started())
    task = asyncio.create_task(handler.on_message(transcript_msg("Greta, well?", utt="alex-1")))
    while gemini.attempts == 0:
        await asyncio.sleep(0.005)
    await handler.on_control(Flush(turn_id="alex-1", reason="bargein"))
    await asyncio.wait_for(task, 2)

    ended = sink.turn("alex-1")
    assert (ended.outcome, ended.llm_provider) == (Outcome.cancelled, None)
    assert fake.calls == [] and sink.chunks("alex-1") == []
    assert _breaker_states(pool) == {"gemini/gemini-2.5-flash": "closed"}


async def test_when_every_provider_fails_the_turn_fails_naming_them_all() -> None:
    gemini = Scripted("gemini", BUSY, retries=0)
    fake = Scripted("fake", ProviderError("fake", "model exploded"))
    handler, sink, metrics = make_handler(two_providers(gemini, fake))
    await handler.on_control(started())
    ended = await turn(handler, sink, "alex-1")

    assert (ended.outcome, ended.llm_provider) == (Outcome.failed, None)
    assert ended.reason == ("llm: no provider answered (gemini: HTTP 503: overloaded; "
                            "fake: model exploded)")
    assert metric(metrics, "glyphoxa_npc_brain_turns_total", outcome="failed") == 1


async def test_one_provider_alone_keeps_its_own_error_and_a_timeout_stays_a_timeout() -> None:
    llm = Scripted("fake", ProviderTimeout("fake", 10), retries=0)
    handler, sink, _ = make_handler(llm)
    await handler.on_control(started())
    ended = await turn(handler, sink, "alex-1")
    assert (ended.outcome, ended.reason) == (Outcome.timed_out, "fake: no answer within 10.0 s")


# --- circuit breakers --------------------------------------------------------------------


async def test_the_breaker_opens_after_repeated_failures_and_the_provider_is_skipped() -> None:
    gemini = Scripted("gemini", BUSY, retries=0)
    pool = two_providers(gemini, breaker_failures=3)
    handler, sink, metrics = make_handler(pool)
    await handler.on_control(started())
    for n in range(3):
        assert (await turn(handler, sink, f"alex-{n}")).llm_provider == "fake"
    assert gemini.attempts == 3
    assert _breaker_states(pool)["gemini/gemini-2.5-flash"] == "open"
    breakers = "glyphoxa_npc_brain_llm_breakers"
    assert metric(metrics, breakers, provider="gemini", state="open") == 1
    assert metric(metrics, breakers, provider="gemini", state="closed") == 0

    ended = await turn(handler, sink, "alex-3")
    assert (ended.outcome, ended.llm_provider) == (Outcome.answered, "fake")
    assert gemini.attempts == 3  # skipped without a call
    assert metric(metrics, "glyphoxa_npc_brain_llm_fallbacks_total", provider="gemini",
                  reason="breaker_open") == 1


async def test_after_the_cooldown_one_trial_call_decides(caplog) -> None:
    clock = Clock()
    gemini = Scripted("gemini", BUSY, retries=0)
    pool = two_providers(gemini, clock=clock, breaker_failures=2, breaker_cooldown_s=30)
    handler, sink, _ = make_handler(pool)
    await handler.on_control(started())
    caplog.set_level(logging.WARNING)
    for n in range(2):
        await turn(handler, sink, f"alex-{n}")
    assert _breaker_states(pool)["gemini/gemini-2.5-flash"] == "open"

    clock.now += 29
    await turn(handler, sink, "alex-2")
    assert gemini.attempts == 2  # still cooling down

    clock.now += 1
    await turn(handler, sink, "alex-3")  # the trial fails: open for another cooldown
    assert gemini.attempts == 3 and _breaker_states(pool)["gemini/gemini-2.5-flash"] == "open"
    await turn(handler, sink, "alex-4")
    assert gemini.attempts == 3

    clock.now += 30
    gemini.error = None  # gemini is back
    ended = await turn(handler, sink, "alex-5")
    assert (ended.llm_provider, gemini.attempts) == ("gemini", 4)
    assert _breaker_states(pool)["gemini/gemini-2.5-flash"] == "closed"
    changes = [r.getMessage() for r in caplog.records if "circuit breaker" in r.getMessage()]
    assert changes == [f"llm provider gemini/gemini-2.5-flash circuit breaker {state}"
                       for state in ("open", "half-open", "open", "half-open", "closed")]


async def test_a_cancelled_trial_hands_the_trial_back() -> None:
    clock = Clock()
    gemini = Silent()
    pool = two_providers(gemini, clock=clock, breaker_failures=1)
    link = await pool.link("acme", LLMChoice.of(pool._settings, "gemini"))
    link.breaker.record_failure()
    clock.now += 30
    handler, sink, _ = make_handler(pool)
    await handler.on_control(started())
    task = asyncio.create_task(handler.on_message(transcript_msg("Greta, well?", utt="alex-1")))
    while gemini.attempts == 0:
        await asyncio.sleep(0.005)
    await handler.on_control(Flush(turn_id="alex-1"))
    await asyncio.wait_for(task, 2)
    assert link.breaker.state == "half_open" and link.breaker.allow()  # the trial is free again


async def test_a_provider_that_cannot_be_made_is_passed_over_and_not_remade_at_once() -> None:
    made: list[str] = []
    fake = FakeLLM()

    async def build(choice: LLMChoice, key: str) -> LLMProvider:
        made.append(choice.provider)
        if choice.provider == "llama":
            raise ProviderUnavailable("llama", "model file not found: /nowhere.gguf")
        return fake

    clock = Clock()
    pool = LLMPool(brain_settings(llm_provider="llama", llm_fallback="fake",
                                  breaker_cooldown_s=30), build=build, clock=clock)
    handler, sink, _ = make_handler(pool)
    await handler.on_control(started())
    for n in range(2):
        ended = await turn(handler, sink, f"alex-{n}")
        assert (ended.outcome, ended.llm_provider) == (Outcome.answered, "fake")
    assert made == ["llama", "fake"]
    clock.now += 30
    await turn(handler, sink, "alex-2")
    assert made == ["llama", "fake", "llama"]


# --- choosing the provider ---------------------------------------------------------------


def test_the_npc_spec_beats_the_campaign_spec_beats_the_settings() -> None:
    settings = brain_settings(llm_provider="gemini", gemini_api_key=GEMINI_KEY,
                              openai_base_url="http://127.0.0.1:11434/v1",
                              llm_fallback="llama", llm_temperature=0.6)
    flash = LLMChoice("gemini", "gemini-2.5-flash", 0.6)
    assert choices_for(settings) == (flash, LLMChoice("llama", None, 0.6))

    campaign = LLMSpec(provider="gemini", model="gemini-2.5-pro", temperature=0.9)
    assert choices_for(settings, campaign)[0] == LLMChoice("gemini", "gemini-2.5-pro", 0.9)
    npc = LLMSpec(provider="openai", model="llama3.2")
    assert choices_for(settings, campaign, npc) == (
        LLMChoice("openai", "llama3.2", 0.9), LLMChoice("llama", None, 0.9))
    other = LLMSpec(provider="openai")  # gemini-2.5-pro is no openai model: not inherited
    assert choices_for(settings, campaign, other)[0] == LLMChoice("openai", "gpt-4o-mini", 0.9)
    warmer = LLMSpec(temperature=1.3)  # the campaign's provider and model, warmer
    assert choices_for(settings, campaign, warmer)[0] == LLMChoice("gemini", "gemini-2.5-pro", 1.3)
    local = LLMSpec(provider="llama", model="some/file.gguf")  # llama serves its own model
    assert choices_for(settings, None, local) == (LLMChoice("llama", None, 0.6),)


def test_a_campaign_choosing_the_fake_double_gets_it_only_where_fakes_are_configured() -> None:
    fake = LLMSpec(provider="fake", temperature=0.3)
    production = brain_settings(llm_provider="llama", llm_fallback="")
    assert choices_for(production, fake) == (LLMChoice("llama", None, 0.3),)
    assert choices_for(production, None, fake) == (LLMChoice("llama", None, 0.3),)
    testing = brain_settings(llm_provider="llama", llm_fallback="fake")
    assert choices_for(testing, fake)[0] == LLMChoice("fake", None, 0.3)


async def test_each_npc_answers_with_its_own_provider() -> None:
    gemini, openai, fake = Scripted("gemini"), Scripted("openai"), FakeLLM()
    pool = make_pool(fake, settings=brain_settings(
        gemini_api_key=GEMINI_KEY, openai_base_url="http://127.0.0.1:11434/v1"),
        gemini=gemini, openai=openai)
    c = Campaign(name="The Silver Hunt", llm=LLMSpec(provider="gemini"), npcs=[
        {"name": "Greta", "persona": PERSONAS["Greta"], "llm": {"provider": "openai"}},
        {"name": "Aldric", "persona": PERSONAS["Aldric"]},
    ])
    handler, sink, _ = make_handler(pool)
    await handler.on_control(started(c))
    assert (await turn(handler, sink, "alex-1", "Greta, the axe?")).llm_provider == "openai"
    assert (await turn(handler, sink, "alex-2", "Aldric, a room?")).llm_provider == "gemini"
    assert fake.calls == [] and len(openai.calls) == len(gemini.calls) == 1


# --- the pool ----------------------------------------------------------------------------


async def test_the_pool_makes_one_provider_per_provider_model_temperature_and_key() -> None:
    made: list[tuple[LLMChoice, str]] = []

    async def build(choice: LLMChoice, key: str) -> LLMProvider:
        made.append((choice, key))
        await asyncio.sleep(0.01)  # a slow load: concurrent first uses wait for the one load
        return Scripted(choice.provider)

    async def key_for(tenant: str, provider: str) -> str | None:
        return TENANT_KEY if tenant == "own-key" else None

    pool = LLMPool(brain_settings(**TWO), build=build, key_for=key_for)
    flash = LLMChoice.of(pool._settings, "gemini")
    pro = LLMChoice.of(pool._settings, "gemini", "gemini-2.5-pro")
    links = await asyncio.gather(pool.link("acme", flash), pool.link("acme", flash),
                                 pool.link("other", flash))
    assert links[0] is links[1] is links[2]
    assert (await pool.link("acme", pro)).provider is not links[0].provider
    assert (await pool.link("own-key", flash)).provider is not links[0].provider
    assert (await pool.link("own-key", flash)).provider is (await pool.link("own-key", flash)).provider
    fake = LLMChoice.of(pool._settings, "fake")
    assert (await pool.link("own-key", fake)).provider is (await pool.link("acme", fake)).provider
    assert made == [(flash, GEMINI_KEY), (pro, GEMINI_KEY), (flash, TENANT_KEY), (fake, "")]
    await pool.close()


async def test_the_tenants_key_is_used_and_never_shown(caplog) -> None:
    keys: list[str] = []
    asked: list[tuple[str, str]] = []

    async def build(choice: LLMChoice, key: str) -> LLMProvider:
        keys.append(key)
        return Scripted(choice.provider, BUSY if choice.provider == "gemini" else None)

    async def key_for(tenant: str, provider: str) -> str | None:
        asked.append((tenant, provider))
        return TENANT_KEY

    caplog.set_level(logging.DEBUG)
    pool = LLMPool(brain_settings(**TWO), build=build, key_for=key_for)
    await pool.start()  # the configured provider, with the configured key
    handler, sink, _ = make_handler(pool)
    await handler.on_control(started())
    for n in range(4):  # gemini fails over to the fake until its breaker opens
        assert (await turn(handler, sink, f"alex-{n}")).llm_provider == "fake"

    assert keys == [GEMINI_KEY, TENANT_KEY, ""]
    assert set(asked) == {("acme", "gemini")}  # never asked for a local provider
    described = pool.describe()
    assert [(p["provider"], p["key"], p["breaker"]) for p in described["providers"]] == [
        ("gemini", "configured", "closed"), ("gemini", "tenant", "open"), ("fake", "none", "closed")]
    assert described["chain"] == ["gemini/gemini-2.5-flash", "fake"]
    shown = json.dumps(described) + caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert TENANT_KEY not in shown and GEMINI_KEY not in shown
    assert "gemini/gemini-2.5-flash (tenant key) circuit breaker open" in caplog.text
    await pool.close()


async def test_a_failing_key_lookup_falls_back_to_the_configured_key(caplog) -> None:
    keys: list[str] = []

    async def build(choice: LLMChoice, key: str) -> LLMProvider:
        keys.append(key)
        return Scripted(choice.provider)

    async def key_for(tenant: str, provider: str) -> str | None:
        raise RuntimeError(f"lookup broke near {TENANT_KEY}")

    pool = LLMPool(brain_settings(**TWO), build=build, key_for=key_for)
    caplog.set_level(logging.WARNING)
    await pool.link("acme", LLMChoice.of(pool._settings, "gemini"))
    assert keys == [GEMINI_KEY]
    assert "tenant key lookup failed (RuntimeError)" in caplog.text
    assert TENANT_KEY not in caplog.text


async def test_personas_are_primed_only_in_a_loaded_provider_that_caches_prompts() -> None:
    class Caching(FakeLLM):
        capabilities = FakeLLM.capabilities.__class__(prompt_cache=True)

        def __init__(self) -> None:
            super().__init__()
            self.primed: list[str] = []

        async def prime(self, system: str) -> None:
            self.primed.append(system)

    caching = Caching()
    pool = make_pool(caching)
    handler, _, _ = make_handler(pool)
    await handler.on_control(started())
    await asyncio.sleep(0)  # not loaded yet: nothing primed, nothing loaded for it
    await handler.close()
    assert caching.primed == []

    await pool.start()
    handler, _, _ = make_handler(pool)
    await handler.on_control(started())
    await asyncio.wait_for(handler._prime_task, 2)
    assert len(caching.primed) == len(PERSONAS)


def _breaker_states(pool: LLMPool) -> dict[str, str]:
    return {f"{p['provider']}/{p['model']}" if p.get("model") else p["provider"]: p["breaker"]
            for p in pool.describe()["providers"]}


async def test_a_provider_with_a_tenant_key_is_closed_when_long_unused() -> None:
    from glyphoxa_npc_brain.llm.pool import TENANT_IDLE_S

    closed: list[str] = []

    class Closing(Scripted):
        async def close(self) -> None:
            closed.append(self.name)

    async def build(choice: LLMChoice, key: str) -> LLMProvider:
        return Closing(choice.provider)

    async def key_for(tenant: str, provider: str) -> str | None:
        return TENANT_KEY if tenant == "own-key" else None

    clock = Clock()
    pool = LLMPool(brain_settings(**TWO), build=build, key_for=key_for, clock=clock)
    flash = LLMChoice.of(pool._settings, "gemini")
    configured = (await pool.link("acme", flash)).provider
    own = (await pool.link("own-key", flash)).provider
    clock.now += TENANT_IDLE_S / 2
    assert (await pool.link("own-key", flash)).provider is own  # used: kept
    clock.now += TENANT_IDLE_S + 1
    assert (await pool.link("acme", flash)).provider is configured  # the configured one stays
    assert closed == ["gemini"]  # the tenant's, idle too long, was closed
    assert (await pool.link("own-key", flash)).provider is not own  # made again when needed
    await pool.close()
