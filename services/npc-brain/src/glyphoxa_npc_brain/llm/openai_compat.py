"""Any OpenAI-compatible chat completions server through the ``openai`` SDK: OpenAI, Groq,
vLLM, Ollama (``http://127.0.0.1:11434/v1``), llama.cpp's ``llama-server``.

One streamed chat completion per turn, the persona as the system message, with
``stream_options.include_usage`` so the server reports the tokens in a last chunk. The
SDK's own retries are off; the base class retries once. Vendor exceptions are mapped here
and never leave this module; the API key is scrubbed from every message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import openai
from openai.types.chat import ChatCompletionChunk

from glyphoxa_npc_brain.llm.base import CallStats, ChatMessage, LLMCapabilities, LLMProvider
from glyphoxa_npc_brain.llm.remote import relay, status_error, transport_error, unexpected_error
from glyphoxa_runtime.providers import ProviderError, ProviderTimeout

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "unused"
"""Sent as the key to servers that need none (the SDK insists on one)."""


@dataclass(frozen=True)
class OpenAIOptions:
    base_url: str = DEFAULT_BASE_URL
    model: str = "gpt-4o-mini"
    api_key: str = ""
    temperature: float = 0.6
    timeout_s: float = 30.0
    """The HTTP client's limit on one call; the base class's timeouts act first."""


class OpenAICompatLLM(LLMProvider):
    name = "openai"
    capabilities = LLMCapabilities(streaming=True, prompt_cache=False, seeded=False, local=False)

    def __init__(self, options: OpenAIOptions, **kwargs: object):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.options = options
        self._client = openai.AsyncOpenAI(
            api_key=options.api_key or NO_KEY,
            base_url=options.base_url,
            max_retries=0,
            timeout=options.timeout_s,
        )

    def describe(self) -> dict[str, object]:
        return {"provider": self.name, "model": self.options.model}

    async def close(self) -> None:
        await self._client.close()

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
        stats.prompt_tokens = self.count_prompt_tokens(system, messages)  # until the server says
        chat = [{"role": "system", "content": system}]
        chat += [{"role": m.role, "content": m.content} for m in messages]

        async def open_stream() -> AsyncIterator[ChatCompletionChunk]:
            return await self._client.chat.completions.create(  # type: ignore[call-overload, no-any-return]
                model=self.options.model,
                messages=chat,
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=max_tokens,
                temperature=self.options.temperature,
                seed=seed,
            )

        async for chunk in relay(open_stream, cancel, self._error, self.name):
            _take_usage(chunk, stats)
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    def _error(self, exc: Exception) -> ProviderError:
        key = self.options.api_key
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeout(self.name, self.options.timeout_s)
        if isinstance(exc, openai.APIConnectionError):  # the transport's error is its cause
            cause = exc.__cause__ or exc
            return transport_error(self.name, cause, key, self.options.timeout_s) or ProviderError(
                self.name, "connection failed", retryable=True
            )
        if isinstance(exc, openai.APIStatusError):
            return status_error(self.name, exc.status_code, _detail(exc.body, exc.message), key)
        if isinstance(exc, openai.APIError):  # an error event in the stream
            return ProviderError(self.name, f"error in the stream: {_detail(exc.body, exc.message)}",
                                 retryable=True)
        lost = transport_error(self.name, exc, key, self.options.timeout_s)
        return lost or unexpected_error(self.name, exc, key)


def _detail(body: object, fallback: str) -> str:
    """``error.message`` of an OpenAI error body (``{"error": {"message": ...}}``)."""
    error = body.get("error", body) if isinstance(body, Mapping) else None
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return str(error["message"])
    return fallback


def _take_usage(chunk: ChatCompletionChunk, stats: CallStats) -> None:
    usage = chunk.usage
    if usage is None:
        return
    stats.prompt_tokens = usage.prompt_tokens or stats.prompt_tokens
    details = usage.prompt_tokens_details
    stats.cached_prompt_tokens = (details.cached_tokens or 0) if details else 0
    stats.completion_tokens = usage.completion_tokens or stats.completion_tokens
