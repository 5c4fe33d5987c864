"""Gemini through the ``google-genai`` SDK (the Gemini Developer API, an API key).

One streaming ``generateContent`` call per turn: the persona as the system instruction,
the conversation as contents (``assistant`` is Gemini's ``model`` role), the reply cap as
``max_output_tokens``. Thinking is off by default (budget 0): a thinking model spends
seconds on thoughts before the first spoken word, which is what a voice NPC cannot
afford. The SDK's own retries are off; the base class retries once.

Vendor exceptions are mapped here and never leave this module; the API key is scrubbed
from every message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from google import genai
from google.genai import errors, types

from glyphoxa_npc_brain.llm.base import CallStats, ChatMessage, LLMCapabilities, LLMProvider
from glyphoxa_npc_brain.llm.remote import relay, status_error, transport_error, unexpected_error
from glyphoxa_runtime.providers import ProviderError, ProviderUnavailable

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/"


@dataclass(frozen=True)
class GeminiOptions:
    api_key: str
    model: str = "gemini-2.5-flash"
    base_url: str = DEFAULT_BASE_URL
    temperature: float = 0.6
    thinking_budget: int = 0
    """0 disables thinking, -1 lets the model decide, N caps the thought tokens."""
    timeout_s: float = 30.0
    """The HTTP client's limit on one call; the base class's timeouts act first."""


class GeminiLLM(LLMProvider):
    name = "gemini"
    capabilities = LLMCapabilities(streaming=True, prompt_cache=False, seeded=False, local=False)

    def __init__(self, options: GeminiOptions, **kwargs: object):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.options = options
        # keyless: the replica serves only tenants that stored their own key; this instance
        # refuses every call (not retryable), and the chain moves on
        self._client = None if not options.api_key else genai.Client(
            api_key=options.api_key,
            vertexai=False,
            http_options=types.HttpOptions(
                base_url=options.base_url,
                timeout=int(options.timeout_s * 1000),
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )

    def describe(self) -> dict[str, object]:
        return {"provider": self.name, "model": self.options.model}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aio.aclose()

    def config(self, system: str, max_tokens: int, seed: int) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(
            system_instruction=system,
            max_output_tokens=max_tokens,
            temperature=self.options.temperature,
            seed=seed,
            thinking_config=types.ThinkingConfig(thinking_budget=self.options.thinking_budget),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )

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
        stats.prompt_tokens = self.count_prompt_tokens(system, messages)  # until Gemini says
        contents = [
            types.Content(
                role="model" if m.role == "assistant" else "user",
                parts=[types.Part(text=m.content)],
            )
            for m in messages
        ]
        config = self.config(system, max_tokens, seed)
        if self._client is None:
            raise ProviderUnavailable(self.name, "no API key: set BRAIN_GEMINI_API_KEY or store "
                                                 "a 'gemini' secret for the tenant")
        client = self._client

        async def open_stream() -> AsyncIterator[types.GenerateContentResponse]:
            return await client.aio.models.generate_content_stream(
                model=self.options.model, contents=contents, config=config  # type: ignore[arg-type]
            )

        async for chunk in relay(open_stream, cancel, self._error, self.name):
            _take_usage(chunk, stats)
            text = _spoken_text(chunk)
            if text:
                yield text

    def _error(self, exc: Exception) -> ProviderError:
        key = self.options.api_key
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, errors.APIError):
            detail = f"{exc.status or ''} {exc.message or ''}".strip()
            return status_error(self.name, int(exc.code or 0), detail, key)
        lost = transport_error(self.name, exc, key, self.options.timeout_s)
        return lost or unexpected_error(self.name, exc, key)


def _spoken_text(chunk: types.GenerateContentResponse) -> str:
    """The text of the first candidate, without thought summaries."""
    if not chunk.candidates:
        return ""
    content = chunk.candidates[0].content
    if content is None or not content.parts:
        return ""
    return "".join(p.text for p in content.parts if p.text and not p.thought)


def _take_usage(chunk: types.GenerateContentResponse, stats: CallStats) -> None:
    """Gemini repeats the usage on every chunk; the last one counts. Thought tokens are
    output tokens (they are billed as such)."""
    usage = chunk.usage_metadata
    if usage is None:
        return
    if usage.prompt_token_count:
        stats.prompt_tokens = usage.prompt_token_count
        stats.cached_prompt_tokens = usage.cached_content_token_count or 0
    out = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
    if out:
        stats.completion_tokens = out
