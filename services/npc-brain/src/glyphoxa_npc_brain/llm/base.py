"""The LLM provider interface: stream a reply as text deltas, cancellable at any token.

The base class owns what every provider needs the same way: the first-token and total
timeouts, one retry of a retryable failure that happened before any text was streamed,
mapping stray exceptions to ``ProviderError`` and reporting usage (tokens in/out) per call
attempt. A provider implements ``_stream_impl`` and declares its ``capabilities``; one
that has a tokenizer overrides ``count_tokens`` so usage counts real tokens.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal, Protocol

from glyphoxa_events.models import Usage
from glyphoxa_runtime.providers import ProviderError, ProviderTimeout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class LLMCapabilities:
    streaming: bool = True
    prompt_cache: bool = False
    """Keeps the evaluated state of prompt prefixes (the persona) between calls."""
    seeded: bool = False
    """The same seed and prompt give the same reply."""
    local: bool = True
    """Runs on this machine, needs no network or API key."""


@dataclass
class CallStats:
    """What one call attempt cost; ``cached_prompt_tokens`` were not evaluated again.

    ``prompt_tokens`` is filled by the provider (what it evaluated, or its
    ``count_prompt_tokens`` if the backend does not say); ``completion_tokens`` is what the
    backend reported (a cloud vendor's usage metadata) or else the provider's
    ``count_tokens`` of the text streamed; ``deltas`` counts text deltas.
    """

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    deltas: int = 0
    first_token_s: float = 0.0
    total_s: float = 0.0
    provider: str = ""
    """The provider that made the call (usage is counted under its name)."""


UsageHook = Callable[[str, CallStats], None]


def usage_of(key: str, calls: list[CallStats], stage: str) -> list[Usage]:
    """The tokens in and out of every call attempt, as usage events ``<key>:<attempt>``
    (a turn's ``llm:<turn>``, a recap's ``recap:<npc>:<call>``), each under the provider that
    made the call; publish_usage skips an amount of zero."""
    return [Usage(key=f"{key}:{attempt}", metric=metric, amount=amount,
                  provider=stats.provider or "llm", stage=stage)
            for attempt, stats in enumerate(calls)
            for metric, amount in (("llm_tokens_in", stats.prompt_tokens),
                                   ("llm_tokens_out", stats.completion_tokens))]


class ReplySource(Protocol):
    """What a turn streams its reply from: one provider, or a chain of them."""

    def stream(
        self,
        system: str,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        seed: int,
        cancel: asyncio.Event,
        calls: list[CallStats] | None = None,
    ) -> AsyncIterator[str]: ...


class LLMProvider(ABC):
    name: str = "llm"
    capabilities: LLMCapabilities = LLMCapabilities()

    def __init__(
        self,
        *,
        first_token_timeout_s: float = 10.0,
        timeout_s: float = 30.0,
        retries: int = 1,
        on_usage: UsageHook | None = None,
    ):
        self.first_token_timeout_s = first_token_timeout_s
        self.timeout_s = timeout_s
        self.retries = retries
        self.on_usage = on_usage
        self.last_stats = CallStats()

    async def start(self) -> None:
        """Load what the provider needs (a model, a client) before the first call."""

    async def prime(self, system: str) -> None:
        """Prepare for prompts starting with ``system`` (a persona), if the provider caches."""

    async def close(self) -> None:
        """Release the provider's resources."""

    def describe(self) -> dict[str, object]:
        return {"provider": self.name}

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is to this provider (usage and metrics). The default
        counts whitespace-separated words; a provider with a tokenizer overrides it."""
        return len(text.split())

    def count_prompt_tokens(self, system: str, messages: list[ChatMessage]) -> int:
        """Tokens of a prompt, for a provider whose backend does not report them."""
        return self.count_tokens(system) + sum(self.count_tokens(m.content) for m in messages)

    async def stream(
        self,
        system: str,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        seed: int,
        cancel: asyncio.Event,
        calls: list[CallStats] | None = None,
        timeouts: tuple[float, float] | None = None,
    ) -> AsyncIterator[str]:
        """Yield the reply as text deltas until it ends, ``max_tokens`` or ``cancel`` is set.

        The usage of every attempt (a retry is a second one) is appended to ``calls``.
        ``timeouts``: (first token, whole reply) in seconds instead of the provider's own, for
        work off a turn's path (a recap reads far more than a turn does).
        Raises ``ProviderError`` (``ProviderTimeout`` for timeouts), never a vendor error.
        """
        attempt = 0
        while True:
            stats = CallStats(provider=self.name)
            try:
                async with aclosing(
                    self._guarded(system, messages, max_tokens, seed, cancel, stats, timeouts)
                ) as deltas:
                    async for delta in deltas:
                        yield delta
                return
            except ProviderError as exc:
                if (
                    not exc.retryable
                    or stats.deltas
                    or attempt >= self.retries
                    or cancel.is_set()
                ):
                    raise
                attempt += 1
                log.warning("llm call failed, retrying: %s", exc, extra={"provider": self.name})
                await asyncio.sleep(0.2 * attempt)
            finally:
                self.last_stats = stats
                if calls is not None:
                    calls.append(stats)
                if self.on_usage is not None:
                    self.on_usage(self.name, stats)

    async def _guarded(
        self,
        system: str,
        messages: list[ChatMessage],
        max_tokens: int,
        seed: int,
        cancel: asyncio.Event,
        stats: CallStats,
        timeouts: tuple[float, float] | None = None,
    ) -> AsyncIterator[str]:
        first_token_s, total_s = timeouts or (self.first_token_timeout_s, self.timeout_s)
        loop = asyncio.get_running_loop()
        started = loop.time()
        agen = self._stream_impl(
            system, messages, max_tokens=max_tokens, seed=seed, cancel=cancel, stats=stats
        )
        text: list[str] = []
        try:
            while not cancel.is_set():
                limit = started + (total_s if stats.deltas else min(total_s, first_token_s))
                try:
                    async with asyncio.timeout_at(limit):
                        delta = await anext(agen)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise ProviderTimeout(self.name, limit - started) from None
                except (ProviderError, asyncio.CancelledError):
                    raise
                except Exception as exc:  # no vendor exception leaks out
                    raise ProviderError(self.name, f"{type(exc).__name__}: {exc}") from exc
                if not stats.deltas:
                    stats.first_token_s = loop.time() - started
                stats.deltas += 1
                text.append(delta)
                yield delta
        finally:
            stats.total_s = loop.time() - started
            if not stats.completion_tokens:  # the backend did not report its usage
                stats.completion_tokens = self._count_completion("".join(text), stats.deltas)
            await agen.aclose()

    def _count_completion(self, text: str, deltas: int) -> int:
        try:
            return self.count_tokens(text)
        except Exception:  # noqa: BLE001 - a count never costs the reply
            log.exception("counting tokens failed", extra={"provider": self.name})
            return deltas

    @abstractmethod
    def _stream_impl(
        self,
        system: str,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        seed: int,
        cancel: asyncio.Event,
        stats: CallStats,
    ) -> AsyncIterator[str]:
        """Yield text deltas; return promptly once ``cancel`` is set; fill ``stats.prompt_*``
        (the prompt tokens evaluated; ``count_prompt_tokens`` if the backend does not say)
        and ``stats.completion_tokens`` if the backend reports them."""
