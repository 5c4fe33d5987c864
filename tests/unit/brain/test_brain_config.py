"""npc-brain settings from the environment and the provider they select."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from glyphoxa_npc_brain.config import Settings
from glyphoxa_npc_brain.llm import FakeLLM, build_llm
from glyphoxa_runtime.providers import ProviderUnavailable

pytestmark = pytest.mark.unit


def test_settings_come_from_brain_variables(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BRAIN_LLM_PROVIDER", "fake")
    monkeypatch.setenv("BRAIN_MAX_TOKENS", "40")
    monkeypatch.setenv("BRAIN_FOLLOWUP_WINDOW_S", "12.5")
    monkeypatch.setenv("GLYPHOXA_HOME", str(tmp_path))
    monkeypatch.setenv("NATS_URL", "nats://example:4222")
    settings = Settings()
    assert (settings.llm_provider, settings.home, settings.nats.url) == (
        "fake",
        tmp_path,
        "nats://example:4222",
    )
    policy = settings.turn_policy()
    assert (policy.max_tokens, policy.followup_window_s, policy.max_sentences) == (40, 12.5, 3)
    assert (settings.llm_threads, settings.llm_ctx, settings.turn_timeout_s) == (None, 2048, 20.0)


def test_llama_threads_fit_the_cores(monkeypatch) -> None:
    """Generation on half the cores (1 to 4), prompts on all of them (at most 8): on a 2-core
    machine one generating thread, which never waits for a core another program holds."""
    from glyphoxa_npc_brain import config

    for cores, expected in ((1, (1, 1)), (2, (1, 2)), (4, (2, 4)), (16, (4, 8))):
        monkeypatch.setattr(config, "usable_cores", lambda cores=cores: cores)
        assert Settings().llm_thread_counts() == expected
    monkeypatch.setenv("BRAIN_LLM_THREADS", "3")
    monkeypatch.setenv("BRAIN_LLM_BATCH_THREADS", "5")
    assert Settings().llm_thread_counts() == (3, 5)


def test_unknown_provider_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("BRAIN_LLM_PROVIDER", "gpt-17")
    with pytest.raises(ValidationError):
        Settings()


async def test_build_llm_selects_the_provider(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BRAIN_LLM_PROVIDER", "fake")
    assert isinstance(await build_llm(Settings()), FakeLLM)
    monkeypatch.setenv("BRAIN_LLM_PROVIDER", "llama")
    monkeypatch.setenv("BRAIN_LLM_MODEL_PATH", str(tmp_path / "missing.gguf"))
    with pytest.raises(ProviderUnavailable, match="model file not found"):
        await build_llm(Settings())
