"""LLM providers: ``llama`` (local GGUF via llama-cpp-python), ``gemini`` (google-genai),
``openai`` (any OpenAI-compatible chat completions server) and ``fake`` (instant).

Each vendor SDK is imported only when its provider is selected. ``build_provider`` makes
one for an ``LLMChoice`` (provider, model, temperature); ``pool.LLMPool`` keeps the ones a
replica uses and ``chain.ProviderChain`` falls back between them."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from urllib.parse import urlparse

from glyphoxa_npc_brain.config import Settings
from glyphoxa_npc_brain.llm.base import (
    CallStats,
    ChatMessage,
    LLMCapabilities,
    LLMProvider,
    UsageHook,
)
from glyphoxa_npc_brain.llm.chain import LLMChoice
from glyphoxa_npc_brain.llm.fake import FakeLLM
from glyphoxa_runtime.providers import ProviderUnavailable

log = logging.getLogger(__name__)

__all__ = ["CallStats", "ChatMessage", "FakeLLM", "LLMCapabilities", "LLMChoice", "LLMProvider",
           "build_llm", "build_provider"]


async def build_llm(settings: Settings, on_usage: UsageHook | None = None) -> LLMProvider:
    """The configured provider, started (the llama model loaded, joined first if need be)."""
    choice = LLMChoice.of(settings, settings.llm_provider)
    llm = await build_provider(settings, choice, settings.api_key(choice.provider), on_usage)
    await llm.start()
    return llm


async def build_provider(
    settings: Settings, choice: LLMChoice, api_key: str, on_usage: UsageHook | None = None
) -> LLMProvider:
    """A provider for ``choice``, not started yet; a cloud one calls with ``api_key``.

    Raises ``ProviderUnavailable`` when a cloud provider has no key it needs."""
    common = {
        "first_token_timeout_s": settings.llm_first_token_timeout_s,
        "timeout_s": settings.turn_timeout_s,
        "on_usage": on_usage,
    }
    if choice.provider == "fake":
        return FakeLLM(**common)  # type: ignore[arg-type]
    if choice.provider in ("gemini", "openai"):
        return _cloud_llm(settings, choice, api_key, common)
    openmp_wait_policy(settings.llm_spin)
    from glyphoxa_npc_brain.llm.llama import LlamaLLM, LlamaOptions  # heavy import only when used

    path = settings.llm_model_path
    if path is None:
        from glyphoxa_npc_brain.models import ensure_default_model

        path = await asyncio.to_thread(ensure_default_model, settings.home, _LogProgress())
    threads, batch_threads = settings.llm_thread_counts()
    return LlamaLLM(
        LlamaOptions(
            model_path=path,
            n_ctx=settings.llm_ctx,
            n_threads=threads,
            n_threads_batch=batch_threads,
            n_batch=settings.llm_batch,
            cache_bytes=settings.llm_cache_mb * 1024 * 1024,
            temperature=choice.temperature,
        ),
        **common,  # type: ignore[arg-type]
    )


def openmp_wait_policy(spin: bool) -> None:
    """How llama.cpp's threads wait for each other: asleep at once (``OMP_WAIT_POLICY=PASSIVE``),
    or with ``spin`` as the OpenMP runtime does by default, spinning on their core a while
    before they sleep. The runtime reads the variable once, when llama_cpp first loads it, so
    it is set before that import; later calls change nothing."""
    if not spin and "llama_cpp" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def _cloud_llm(
    settings: Settings, choice: LLMChoice, api_key: str, common: dict[str, object]
) -> LLMProvider:
    timeout_s = settings.turn_timeout_s + 5  # the HTTP client's backstop; ours act first
    assert choice.model is not None
    # with tenant keys on, a keyless instance serves (refuses) tenants that stored none
    tenant_keys = bool(settings.nats.secrets_key.get_secret_value())
    if choice.provider == "gemini":
        from glyphoxa_npc_brain.llm.gemini import GeminiLLM, GeminiOptions

        if not api_key and not tenant_keys:
            raise ProviderUnavailable("gemini", "no API key (BRAIN_GEMINI_API_KEY or the "
                                                "tenant's stored key)")
        return GeminiLLM(
            GeminiOptions(
                api_key=api_key,
                model=choice.model,
                base_url=settings.gemini_base_url,
                temperature=choice.temperature,
                thinking_budget=settings.gemini_thinking_budget,
                timeout_s=timeout_s,
            ),
            **common,
        )
    from glyphoxa_npc_brain.llm.openai_compat import OpenAICompatLLM, OpenAIOptions

    if (not api_key and not tenant_keys
            and urlparse(settings.openai_base_url).hostname == "api.openai.com"):
        raise ProviderUnavailable("openai", "no API key for api.openai.com "
                                            "(BRAIN_OPENAI_API_KEY or the tenant's stored key)")
    return OpenAICompatLLM(
        OpenAIOptions(
            base_url=settings.openai_base_url,
            model=choice.model,
            api_key=api_key,
            temperature=choice.temperature,
            timeout_s=timeout_s,
        ),
        **common,
    )


class _LogProgress:
    """Logs the join of the default model every 10 %."""

    def __init__(self) -> None:
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        decile = 10 * done // max(total, 1)
        if decile != self._shown:
            self._shown = decile
            log.info("joining the default model: %d%%", 10 * decile)
