"""Which LLM providers a turn may use, in order, and the fallback between them.

``choices_for`` picks them: the NPC's ``llm`` over the campaign's over the settings
(``BRAIN_LLM_PROVIDER``), then ``BRAIN_LLM_FALLBACK``. ``ProviderChain.stream`` streams the
reply from the first provider that answers:

- a provider whose circuit breaker is open is skipped without a call;
- a ``ProviderError`` before any text (raised after the provider's own retry) counts against
  its breaker, and the next provider is tried, with a warning naming both and the reason;
- once text was streamed, an error ends the turn: two providers' replies are never spliced;
- a cancel (barge-in, flush) never falls back;
- when none answered, the error names every provider tried and why it failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass

from glyphoxa_campaign import LLMSpec
from glyphoxa_campaign.model import FAKE
from glyphoxa_npc_brain.config import LLMName, Settings
from glyphoxa_npc_brain.llm.base import CallStats, ChatMessage, LLMProvider
from glyphoxa_runtime.breaker import CircuitBreaker
from glyphoxa_runtime.providers import ProviderError, ProviderUnavailable

log = logging.getLogger(__name__)

_REASON_CHARS = 160


@dataclass(frozen=True)
class LLMChoice:
    """One provider a turn may call, with the settings' defaults filled in: ``model`` is
    None for llama (the replica's own model serves) and fake."""

    provider: LLMName
    model: str | None
    temperature: float

    @classmethod
    def of(
        cls,
        settings: Settings,
        provider: LLMName,
        model: str | None = None,
        temperature: float | None = None,
    ) -> LLMChoice:
        if provider == "gemini":
            model = model or settings.gemini_model
        elif provider == "openai":
            model = model or settings.openai_model
        else:  # a campaign never makes a replica load a model file of its choosing
            model = None
        return cls(provider, model, settings.llm_temperature if temperature is None else temperature)

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}" if self.model else self.provider


def choices_for(settings: Settings, *specs: LLMSpec | None) -> tuple[LLMChoice, ...]:
    """The providers a turn tries, in order: the one ``specs`` choose (each overrides the
    ones before it: pass the campaign's, then the NPC's), then ``BRAIN_LLM_FALLBACK`` with
    the same temperature. A model chosen for one provider does not carry over to another.
    A campaign's choice of the ``fake`` double counts only where the operator configured
    fakes (session-control refuses such campaigns elsewhere)."""
    provider: LLMName = settings.llm_provider
    model: str | None = None
    temperature: float | None = None
    fakes_served = FAKE in (settings.llm_provider, *settings.llm_fallback)
    for spec in specs:
        if spec is None:
            continue
        if spec.provider == FAKE and not fakes_served:
            spec = spec.model_copy(update={"provider": None})  # a test double: never for players
        if spec.provider is not None and spec.provider != provider:
            provider, model = spec.provider, None
        model = spec.model or model
        temperature = temperature if spec.temperature is None else spec.temperature
    chosen = LLMChoice.of(settings, provider, model, temperature)
    fallbacks = (LLMChoice.of(settings, name, None, temperature) for name in settings.llm_fallback)
    return tuple(dict.fromkeys((chosen, *fallbacks)))  # without repeats, in order


@dataclass(frozen=True)
class Link:
    """A provider ready to call and the breaker guarding it."""

    provider: LLMProvider
    breaker: CircuitBreaker


OpenLink = Callable[[LLMChoice], Awaitable[Link]]
"""The provider of a choice, made if need be (``LLMPool``); a ``ProviderError`` if it
cannot be made here (no API key, no model file)."""

SkipHook = Callable[[str, str], None]
"""Told (provider, reason) when a turn passes over a provider: error, breaker_open,
unavailable."""


class ProviderChain:
    """The providers of one NPC's turn; streams like one provider (``ReplySource``)."""

    def __init__(
        self,
        choices: tuple[LLMChoice, ...],
        open_link: OpenLink,
        *,
        on_skip: SkipHook | None = None,
        log_extra: Mapping[str, object] | None = None,
    ):
        self.choices = choices
        self._open = open_link
        self._on_skip = on_skip
        self._extra = dict(log_extra or {})
        self.served_by: str | None = None
        """The provider whose text was streamed (None while none has spoken)."""

    async def stream(
        self,
        system: str,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        seed: int,
        cancel: asyncio.Event,
        calls: list[CallStats] | None = None,
    ) -> AsyncIterator[str]:
        """The reply of the first provider that answers; ``ProviderError`` when none did.
        Usage of every call attempt, whichever provider made it, is appended to ``calls``."""
        failures: list[ProviderError] = []
        for n, choice in enumerate(self.choices):
            link = await self._usable(n, choice, failures)
            if link is None:
                continue
            spoke = False
            try:
                stream = link.provider.stream(system, messages, max_tokens=max_tokens, seed=seed,
                                              cancel=cancel, calls=calls)
                async with aclosing(stream) as deltas:
                    async for delta in deltas:
                        if not spoke:
                            spoke, self.served_by = True, link.provider.name
                        yield delta
            except ProviderError as exc:
                link.breaker.record_failure(exc.retryable)
                if spoke or cancel.is_set():
                    raise
                failures.append(exc)
                self._passed_over(n, "error", exc)
                continue
            except BaseException:  # cancelled, or closed by the reader (the sentence cap)
                _settle(link.breaker, answered=spoke)
                raise
            _settle(link.breaker, answered=spoke or not cancel.is_set())
            return
        raise _none_answered(self.choices, failures)

    async def _usable(
        self, n: int, choice: LLMChoice, failures: list[ProviderError]
    ) -> Link | None:
        """The link of choice ``n`` if it may be called now, else None (the failure noted)."""
        try:
            link = await self._open(choice)
        except ProviderError as exc:
            failures.append(exc)
            self._passed_over(n, "unavailable", exc)
            return None
        if not link.breaker.allow():
            failures.append(ProviderUnavailable(choice.provider, "circuit breaker open"))
            self._passed_over(n, "breaker_open", failures[-1])
            return None
        return link

    def _passed_over(self, n: int, reason: str, exc: ProviderError) -> None:
        if self._on_skip is not None:
            self._on_skip(self.choices[n].provider, reason)
        then = self.choices[n + 1].label if n + 1 < len(self.choices) else None
        extra = {**self._extra, "provider": self.choices[n].provider, "fallback": then,
                 "reason": reason}
        level = logging.INFO if reason == "breaker_open" else logging.WARNING
        log.log(level, "llm provider %s passed over (%s); %s", self.choices[n].label, exc,
                f"trying {then}" if then else "no provider left", extra=extra)


def _settle(breaker: CircuitBreaker, *, answered: bool) -> None:
    if answered:
        breaker.record_success()
    else:  # no verdict (cancelled before a word): a half-open trial is handed back uncounted
        breaker.record_failure(retryable=False)


def _none_answered(choices: tuple[LLMChoice, ...], failures: list[ProviderError]) -> ProviderError:
    if len(choices) == 1 and len(failures) == 1:
        return failures[0]  # one provider: its own error (a timeout stays a timeout)
    tried = "; ".join(_cut(str(f)) for f in failures)
    return ProviderError("llm", f"no provider answered ({tried})",
                         retryable=any(f.retryable for f in failures))


def _cut(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."
