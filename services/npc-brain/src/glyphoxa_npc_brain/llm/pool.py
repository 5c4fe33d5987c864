"""The LLM providers of one npc-brain replica, made once and shared by its sessions.

One provider instance per (provider, model, temperature, API key), each with its own
circuit breaker (``glyphoxa_npc_brain_llm_breakers{provider,state}``, and a warning on every
change). The configured provider is made and started by ``start`` (so the local model is
loaded, and primed by the sessions, before the first turn); a fallback or a provider a
campaign or NPC chooses is made when a turn first needs it: once, even when turns of
several sessions ask at the same time, and a llama model loads in a thread. A provider
that cannot be made (no key, no model file) is not tried again for ``BRAIN_BREAKER_COOLDOWN_S``.

API keys: ``key_for(tenant, provider)`` is the seam for a tenant's own keys. npc-brain
awaits it whenever a turn of ``tenant`` reaches a cloud provider (``gemini``, ``openai``;
never for llama or fake); it returns that tenant's key, or None for the configured one
(``BRAIN_GEMINI_API_KEY``, ``BRAIN_OPENAI_API_KEY``). It should answer fast (cache what it
fetches: it is on the turn's path) and raise nothing it can avoid (an exception counts as
None, logged by its type only). Instances are told apart by a SHA-256 of their key; the
key itself never reaches a log line, a metric label or ``describe``, and every key the hook
returns is registered as a secret for the log scrubber.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial

from glyphoxa_campaign import Campaign, Npc
from glyphoxa_npc_brain.config import CLOUD_LLMS, Settings
from glyphoxa_npc_brain.llm import build_provider
from glyphoxa_npc_brain.llm.base import LLMProvider
from glyphoxa_npc_brain.llm.chain import Link, LLMChoice, ProviderChain, choices_for
from glyphoxa_npc_brain.llm.remote import scrub
from glyphoxa_npc_brain.metrics import BrainMetrics
from glyphoxa_runtime.breaker import CircuitBreaker
from glyphoxa_runtime.logs import register_secret
from glyphoxa_runtime.providers import ProviderError, ProviderUnavailable

log = logging.getLogger(__name__)

KeyResolver = Callable[[str, str], Awaitable[str | None]]
"""``key_for(tenant, provider)``: the tenant's API key for a cloud provider, or None."""

ProviderFactory = Callable[[LLMChoice, str], Awaitable[LLMProvider]]
"""Makes a provider (not started) for a choice and an API key; default ``build_provider``."""

_Ident = tuple[LLMChoice, str]  # the choice and the SHA-256 of the key ("" without one)


@dataclass
class _Instance:
    link: Link
    key_origin: str
    """Where its API key came from: configured, tenant or none (never the key itself)."""
    last_used: float = 0.0


TENANT_IDLE_S = 900.0
"""A provider made with a tenant's own key and unused this long is closed (a rotated key
leaves its old instance behind; a tenant that stopped playing holds no client)."""


class LLMPool:
    """The providers of a replica by (provider, model, temperature, key), with breakers."""

    def __init__(
        self,
        settings: Settings,
        *,
        key_for: KeyResolver | None = None,
        build: ProviderFactory | None = None,
        metrics: BrainMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``build`` makes providers (tests make failing or slow ones); ``clock`` times the
        breakers' cooldowns."""
        self._settings, self._key_for, self._clock = settings, key_for, clock
        self.metrics = metrics
        on_usage = metrics.count_usage if metrics is not None else None
        self._build = build or partial(build_provider, settings, on_usage=on_usage)
        self._instances: dict[_Ident, _Instance] = {}
        self._making: dict[_Ident, asyncio.Task[_Instance]] = {}
        self._unavailable: dict[_Ident, tuple[float, str]] = {}  # until when, and why
        self.primary: LLMProvider | None = None
        self._turn_watchers: set[asyncio.Event] = set()
        self.last_turn_at: float | None = None
        """When a turn (or a speculative reply) last asked for its providers."""

    async def start(self) -> LLMProvider:
        """Make and start the configured provider (loads the local model if that is it)."""
        choice = LLMChoice.of(self._settings, self._settings.llm_provider)
        self.primary = (await self.link(None, choice)).provider
        return self.primary

    def chain_for(
        self, tenant: str, campaign: Campaign, npc: Npc | None,
        log_extra: Mapping[str, object] | None = None,
    ) -> ProviderChain:
        """The providers a turn answering as ``npc`` tries: the NPC's choice, else the
        campaign's, else the settings', then the fallbacks."""
        self.last_turn_at = self._clock()
        for watcher in self._turn_watchers:  # background work on the same model gives way
            watcher.set()
        return self.background_chain(tenant, campaign, npc, log_extra)

    def background_chain(
        self, tenant: str, campaign: Campaign, npc: Npc | None,
        log_extra: Mapping[str, object] | None = None,
    ) -> ProviderChain:
        """:meth:`chain_for` for work off a turn's path (recaps): it tells no watcher."""
        choices = choices_for(self._settings, campaign.llm, npc.llm if npc else None)
        return ProviderChain(choices, partial(self.link, tenant), on_skip=self._count_skip,
                             log_extra={"tenant": tenant, **(log_extra or {})})

    def watch_turns(self) -> asyncio.Event:
        """An event set when the next turn asks for its providers; :meth:`unwatch` it."""
        event = asyncio.Event()
        self._turn_watchers.add(event)
        return event

    def unwatch(self, event: asyncio.Event) -> None:
        self._turn_watchers.discard(event)

    async def prime(self, campaign: Campaign, npc: Npc, system: str) -> None:
        """Evaluate a persona ahead of the NPC's first turn if its provider is loaded and
        caches prompts (llama); never loads a provider for it."""
        first = choices_for(self._settings, campaign.llm, npc.llm)[0]
        for (choice, _), instance in list(self._instances.items()):
            llm = instance.link.provider
            if choice.provider == first.provider and llm.capabilities.prompt_cache:
                await llm.prime(system)  # the loaded model is shared whatever the temperature
                return

    async def link(self, tenant: str | None, choice: LLMChoice) -> Link:
        """The provider of ``choice`` with ``tenant``'s key (None: the configured one) and
        its breaker, made on first use. Raises ``ProviderError`` if it cannot be made."""
        key, origin = await self._key(tenant, choice.provider)
        ident = (choice, hashlib.sha256(key.encode()).hexdigest() if key else "")
        instance = self._instances.get(ident)
        await self._evict_idle()
        if instance is not None:
            instance.last_used = self._clock()
            return instance.link
        down = self._unavailable.get(ident)
        if down is not None and self._clock() < down[0]:
            raise ProviderUnavailable(choice.provider, down[1])
        task = self._making.get(ident)
        if task is None:
            task = asyncio.create_task(self._make(ident, key, origin), name=f"llm-{choice.provider}")
            task.add_done_callback(_retrieve)
            self._making[ident] = task
        return (await asyncio.shield(task)).link  # a turn that gives up leaves the load going

    async def _key(self, tenant: str | None, provider: str) -> tuple[str, str]:
        if provider not in CLOUD_LLMS:
            return "", "none"
        if tenant is not None and self._key_for is not None:
            try:
                key = await self._key_for(tenant, provider)
            except Exception as exc:  # the tenant's key is lost for this turn, not the turn
                log.warning("tenant key lookup failed (%s); using the configured key",
                            type(exc).__name__, extra={"tenant": tenant, "provider": provider})
                key = None
            if key is not None:
                register_secret(key)
                return key, "tenant"
        return self._settings.api_key(provider), "configured"

    async def _make(self, ident: _Ident, key: str, origin: str) -> _Instance:
        choice = ident[0]
        try:
            llm = await self._started(choice, key)
        except ProviderError as exc:
            why = str(exc).removeprefix(f"{exc.provider}: ")
            self._unavailable[ident] = (self._clock() + self._settings.breaker_cooldown_s, why)
            log.warning("llm provider %s cannot be used: %s", choice.label, exc,
                        extra={"provider": choice.provider})
            raise
        finally:
            self._making.pop(ident, None)
        instance = _Instance(Link(llm, self._breaker(choice, origin)), origin, self._clock())
        self._instances[ident] = instance
        self._unavailable.pop(ident, None)
        log.info("llm provider ready", extra={"provider": choice.provider, "model": choice.model,
                                              "temperature": choice.temperature, "key": origin})
        return instance

    async def _started(self, choice: LLMChoice, key: str) -> LLMProvider:
        try:
            llm = await self._build(choice, key)
        except ProviderError:
            raise
        except Exception as exc:  # an SDK or a model file that would not load
            detail = scrub(f"{type(exc).__name__}: {exc}", key)
            raise ProviderUnavailable(choice.provider, f"cannot be made: {detail}") from exc
        try:
            await llm.start()
        except Exception as exc:
            await llm.close()
            if isinstance(exc, ProviderError):
                raise
            detail = scrub(f"{type(exc).__name__}: {exc}", key)
            raise ProviderUnavailable(choice.provider, f"cannot start: {detail}") from exc
        return llm

    def _breaker(self, choice: LLMChoice, origin: str) -> CircuitBreaker:
        name = choice.label + (" (tenant key)" if origin == "tenant" else "")
        gauge = self.metrics.llm_breakers if self.metrics is not None else None
        last = ["closed"]

        def changed(_: str, state: str) -> None:
            if gauge is not None:
                gauge.labels(provider=choice.provider, state=last[0]).dec()
                gauge.labels(provider=choice.provider, state=state).inc()
            last[0] = state
            log.warning("llm provider %s circuit breaker %s", name, state.replace("_", "-"),
                        extra={"provider": choice.provider, "breaker": state})

        if gauge is not None:
            gauge.labels(provider=choice.provider, state="closed").inc()
        s = self._settings
        return CircuitBreaker(name, s.breaker_failures, s.breaker_cooldown_s, clock=self._clock,
                              on_change=changed)

    def _count_skip(self, provider: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.llm_fallbacks.labels(provider=provider, reason=reason).inc()

    def describe(self) -> dict[str, object]:
        """The configured chain and every provider made so far with its breaker's state."""
        s = self._settings
        return {
            "chain": [c.label for c in choices_for(s)],
            "breaker": {"failures": s.breaker_failures, "cooldown_s": s.breaker_cooldown_s},
            "providers": [
                {"provider": choice.provider, **({"model": choice.model} if choice.model else {}),
                 **i.link.provider.describe(), "temperature": choice.temperature, "key": i.key_origin,
                 "breaker": i.link.breaker.state}
                for (choice, _), i in list(self._instances.items())
            ],
        }

    async def _evict_idle(self) -> None:
        now = self._clock()
        idle = [ident for ident, inst in self._instances.items()
                if inst.key_origin == "tenant" and now - inst.last_used > TENANT_IDLE_S]
        for ident in idle:
            instance = self._instances.pop(ident)
            log.info("llm provider with a tenant key closed after %.0f s unused", TENANT_IDLE_S,
                     extra={"provider": ident[0].provider, "model": ident[0].model})
            try:
                await instance.link.provider.close()
            except Exception:  # noqa: BLE001 - closing an idle client must not cost a turn
                log.warning("closing an idle llm provider failed", exc_info=True)

    async def close(self) -> None:
        for task in list(self._making.values()):
            task.cancel()
        if self._making:
            await asyncio.wait(set(self._making.values()))
        closed: set[int] = set()
        for instance in list(self._instances.values()):
            llm = instance.link.provider
            if id(llm) not in closed:
                closed.add(id(llm))
                await llm.close()
        self._instances.clear()


def _retrieve(task: asyncio.Task[_Instance]) -> None:
    """Fetch the error of a load nobody waits for any more (no "never retrieved" noise);
    the load logged it."""
    if not task.cancelled():
        task.exception()
