"""Settings and selection of the cloud LLM providers, and how HTTP failures are mapped."""

from __future__ import annotations

import pytest

from glyphoxa_npc_brain.config import Settings
from glyphoxa_npc_brain.llm import LLMChoice, build_llm, build_provider
from glyphoxa_npc_brain.llm.gemini import GeminiLLM
from glyphoxa_npc_brain.llm.openai_compat import OpenAICompatLLM
from glyphoxa_npc_brain.llm.remote import scrub, status_error, transport_error
from glyphoxa_runtime.providers import ProviderTimeout, ProviderUnavailable
from glyphoxa_runtime.settings import load_settings

pytestmark = pytest.mark.unit

KEY = "AIzaUnitTestKey0123456789"


def test_gemini_defaults(monkeypatch) -> None:
    monkeypatch.setenv("BRAIN_LLM_PROVIDER", "gemini")
    monkeypatch.setenv("BRAIN_GEMINI_API_KEY", KEY)
    settings = Settings()
    assert (settings.gemini_model, settings.gemini_thinking_budget) == ("gemini-2.5-flash", 0)
    assert settings.gemini_base_url == "https://generativelanguage.googleapis.com/"
    assert KEY not in repr(settings) and KEY in settings.secrets()


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"BRAIN_LLM_PROVIDER": "gemini"}, "BRAIN_GEMINI_API_KEY"),
        ({"BRAIN_LLM_PROVIDER": "openai"}, "BRAIN_OPENAI_API_KEY"),
    ],
)
def test_a_missing_key_stops_the_start_naming_the_variable(
    monkeypatch, capsys, env: dict[str, str], variable: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        load_settings(Settings, "npc-brain")
    assert info.value.code == 2
    assert variable in capsys.readouterr().err


def test_a_local_openai_compatible_server_needs_no_key(monkeypatch) -> None:
    monkeypatch.setenv("BRAIN_LLM_PROVIDER", "openai")
    monkeypatch.setenv("BRAIN_OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    assert Settings().openai_api_key.get_secret_value() == ""


def test_a_bad_setting_never_echoes_the_key(monkeypatch, capsys) -> None:
    monkeypatch.setenv("BRAIN_LLM_PROVIDER", "gemini")
    monkeypatch.setenv("BRAIN_GEMINI_API_KEY", KEY)
    monkeypatch.setenv("BRAIN_GEMINI_THINKING_BUDGET", "-5")
    with pytest.raises(SystemExit):
        load_settings(Settings, "npc-brain")
    err = capsys.readouterr().err
    assert "BRAIN_GEMINI_THINKING_BUDGET" in err and KEY not in err


async def test_build_llm_selects_the_cloud_providers(monkeypatch) -> None:
    monkeypatch.setenv("BRAIN_LLM_PROVIDER", "gemini")
    monkeypatch.setenv("BRAIN_GEMINI_API_KEY", KEY)
    monkeypatch.setenv("BRAIN_GEMINI_MODEL", "gemini-2.5-flash-lite")
    gemini = await build_llm(Settings())
    try:
        assert isinstance(gemini, GeminiLLM) and not gemini.capabilities.local
        assert gemini.describe() == {"provider": "gemini", "model": "gemini-2.5-flash-lite"}
    finally:
        await gemini.close()
    monkeypatch.setenv("BRAIN_LLM_PROVIDER", "openai")
    monkeypatch.setenv("BRAIN_OPENAI_API_KEY", "sk-unit")
    monkeypatch.setenv("BRAIN_OPENAI_MODEL", "llama3.2")
    openai = await build_llm(Settings())
    try:
        assert isinstance(openai, OpenAICompatLLM) and not openai.capabilities.local
        assert openai.describe() == {"provider": "openai", "model": "llama3.2"}
    finally:
        await openai.close()


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (403, False), (404, False), (408, True), (429, True),
     (500, True), (503, True)],
)
def test_status_errors_say_whether_to_retry(status: int, retryable: bool) -> None:
    error = status_error("gemini", status, f"refused {KEY}", KEY)
    assert error.retryable is retryable and f"HTTP {status}" in str(error)
    assert KEY not in str(error)


def test_transport_errors_are_retryable_and_timeouts_are_timeouts() -> None:
    lost = transport_error("openai", ConnectionResetError(f"reset {KEY}"), KEY, 5.0)
    assert lost is not None and lost.retryable and KEY not in str(lost)
    assert isinstance(transport_error("openai", TimeoutError(), KEY, 5.0), ProviderTimeout)
    assert transport_error("openai", KeyError("x"), KEY, 5.0) is None


def test_scrub_cuts_long_details() -> None:
    assert scrub(f"key={KEY}", KEY) == "key=***"
    assert len(scrub("x" * 1000, KEY)) < 400


# --- the fallback chain's settings --------------------------------------------------------


def test_fallbacks_are_a_comma_separated_list_and_breakers_have_defaults(monkeypatch) -> None:
    monkeypatch.setenv("BRAIN_LLM_PROVIDER", "gemini")
    monkeypatch.setenv("BRAIN_GEMINI_API_KEY", KEY)
    monkeypatch.setenv("BRAIN_LLM_FALLBACK", " OpenAI, llama ")
    monkeypatch.setenv("BRAIN_OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    settings = Settings()
    assert settings.llm_fallback == ("openai", "llama")
    assert (settings.breaker_failures, settings.breaker_cooldown_s) == (3, 30.0)
    monkeypatch.setenv("BRAIN_LLM_FALLBACK", "")
    assert Settings().llm_fallback == ()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"BRAIN_LLM_PROVIDER": "llama", "BRAIN_LLM_FALLBACK": "llama"},
         "BRAIN_LLM_FALLBACK lists llama, which is BRAIN_LLM_PROVIDER itself"),
        ({"BRAIN_LLM_PROVIDER": "fake", "BRAIN_LLM_FALLBACK": "llama,llama"},
         "BRAIN_LLM_FALLBACK lists a provider twice"),
        ({"BRAIN_LLM_PROVIDER": "llama", "BRAIN_LLM_FALLBACK": "gemini"},
         "BRAIN_GEMINI_API_KEY is required when BRAIN_LLM_FALLBACK has gemini"),
        ({"BRAIN_LLM_PROVIDER": "llama", "BRAIN_LLM_FALLBACK": "openai"},
         "BRAIN_OPENAI_API_KEY is required for api.openai.com (BRAIN_LLM_FALLBACK has openai"),
        ({"BRAIN_LLM_PROVIDER": "llama", "BRAIN_LLM_FALLBACK": "gpt-17"}, "BRAIN_LLM_FALLBACK"),
        ({"BRAIN_BREAKER_FAILURES": "0"}, "BRAIN_BREAKER_FAILURES"),
    ],
)
def test_a_bad_fallback_stops_the_start_clearly(
    monkeypatch, capsys, env: dict[str, str], says: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        load_settings(Settings, "npc-brain")
    assert says in capsys.readouterr().err


async def test_build_provider_makes_the_chosen_model_with_the_given_key(monkeypatch) -> None:
    monkeypatch.setenv("BRAIN_LLM_PROVIDER", "fake")
    settings = Settings()
    choice = LLMChoice.of(settings, "gemini", "gemini-2.5-pro", 1.1)
    gemini = await build_provider(settings, choice, "AIzaTenant0123456789")
    try:
        assert isinstance(gemini, GeminiLLM)
        assert (gemini.options.model, gemini.options.temperature) == ("gemini-2.5-pro", 1.1)
        assert gemini.options.api_key == "AIzaTenant0123456789"
    finally:
        await gemini.close()
    with pytest.raises(ProviderUnavailable, match="no API key"):
        await build_provider(settings, choice, "")
    with pytest.raises(ProviderUnavailable, match="no API key for api.openai.com"):
        await build_provider(settings, LLMChoice.of(settings, "openai"), "")


async def test_without_any_key_gemini_waits_for_tenant_keys_and_refuses_calls() -> None:
    import asyncio

    from glyphoxa_npc_brain.llm.gemini import GeminiLLM, GeminiOptions
    from glyphoxa_runtime.providers import ProviderUnavailable
    from glyphoxa_session_control.crypto import new_secret_key

    settings = Settings(llm_provider="gemini", nats={"secrets_key": new_secret_key()})  # type: ignore[arg-type]
    assert not settings.gemini_api_key.get_secret_value()  # accepted: tenants bring keys
    llm = GeminiLLM(GeminiOptions(api_key="", model="gemini-2.5-flash",
                                  base_url="http://127.0.0.1:9/", temperature=0.6,
                                  thinking_budget=0, timeout_s=5))
    with pytest.raises(ProviderUnavailable, match="store a 'gemini' secret"):
        async for _ in llm.stream("persona", [], max_tokens=5, seed=1, cancel=asyncio.Event()):
            pass
    await llm.close()
