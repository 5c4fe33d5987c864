"""LLM providers: ``llama`` (local GGUF via llama-cpp-python), ``gemini`` (google-genai),
``openai`` (any OpenAI-compatible chat completions server) and ``fake`` (instant).

Each vendor SDK is imported only when its provider is selected."""

from __future__ import annotations

import asyncio
import logging

from glyphoxa_npc_brain.config import Settings
from glyphoxa_npc_brain.llm.base import (
    CallStats,
    ChatMessage,
    LLMCapabilities,
    LLMProvider,
    UsageHook,
)
from glyphoxa_npc_brain.llm.fake import FakeLLM

log = logging.getLogger(__name__)

__all__ = ["CallStats", "ChatMessage", "FakeLLM", "LLMCapabilities", "LLMProvider", "build_llm"]


async def build_llm(settings: Settings, on_usage: UsageHook | None = None) -> LLMProvider:
    """The configured provider, started (the llama model loaded, joined first if need be)."""
    common = {
        "first_token_timeout_s": settings.llm_first_token_timeout_s,
        "timeout_s": settings.turn_timeout_s,
        "on_usage": on_usage,
    }
    if settings.llm_provider == "fake":
        return FakeLLM(**common)  # type: ignore[arg-type]
    if settings.llm_provider in ("gemini", "openai"):
        return _cloud_llm(settings, common)
    from glyphoxa_npc_brain.llm.llama import LlamaLLM, LlamaOptions  # heavy import only when used

    path = settings.llm_model_path
    if path is None:
        from glyphoxa_npc_brain.models import ensure_default_model

        path = await asyncio.to_thread(ensure_default_model, settings.home, _LogProgress())
    llm = LlamaLLM(
        LlamaOptions(
            model_path=path,
            n_ctx=settings.llm_ctx,
            n_threads=settings.llm_threads,
            n_batch=settings.llm_batch,
            cache_bytes=settings.llm_cache_mb * 1024 * 1024,
            temperature=settings.llm_temperature,
        ),
        **common,  # type: ignore[arg-type]
    )
    await llm.start()
    return llm


def _cloud_llm(settings: Settings, common: dict[str, object]) -> LLMProvider:
    timeout_s = settings.turn_timeout_s + 5  # the HTTP client's backstop; ours act first
    if settings.llm_provider == "gemini":
        from glyphoxa_npc_brain.llm.gemini import GeminiLLM, GeminiOptions

        return GeminiLLM(
            GeminiOptions(
                api_key=settings.gemini_api_key.get_secret_value(),
                model=settings.gemini_model,
                base_url=settings.gemini_base_url,
                temperature=settings.llm_temperature,
                thinking_budget=settings.gemini_thinking_budget,
                timeout_s=timeout_s,
            ),
            **common,
        )
    from glyphoxa_npc_brain.llm.openai_compat import OpenAICompatLLM, OpenAIOptions

    return OpenAICompatLLM(
        OpenAIOptions(
            base_url=settings.openai_base_url,
            model=settings.openai_model,
            api_key=settings.openai_api_key.get_secret_value(),
            temperature=settings.llm_temperature,
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
