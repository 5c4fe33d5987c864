"""The providers an stt replica tries, in order, with a circuit breaker each.

``STT_PROVIDER`` is the primary; ``STT_FALLBACK`` lists the ones tried after it (e.g.
``whisper`` behind ``deepgram``). A provider whose breaker is open is skipped until its
cooldown has passed. A tenant that stored its own key for a cloud provider gets an
instance of that provider with its key (made on first use, kept for the process).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from prometheus_client import Gauge

from glyphoxa_runtime.breaker import CircuitBreaker, reported
from glyphoxa_runtime.providers import ProviderError
from glyphoxa_runtime.tenant_keys import PerKey, TenantSecrets
from glyphoxa_stt.providers.base import SttProvider

log = logging.getLogger("glyphoxa.stt.chain")

KEYED = frozenset({"deepgram"})
"""Providers a tenant may bring its own API key for (stored under the same name)."""

BREAKER_OPEN = Gauge(
    "glyphoxa_stt_provider_breaker_open",
    "circuit breaker of an stt provider: 1 open (skipped), 0.5 half-open (one trial), 0 closed",
    ["provider"])

KeyedBuilder = Callable[[str, str], SttProvider]
"""``(provider name, api key) -> provider``: a cloud provider with a tenant's own key."""


class SttChain:
    def __init__(
        self,
        providers: Sequence[SttProvider],
        *,
        failures: int = 3,
        cooldown_s: float = 30.0,
        keys: TenantSecrets | None = None,
        keyed: KeyedBuilder | None = None,
    ):
        if not providers:
            raise ValueError("an stt chain needs at least one provider")
        self.providers = list(providers)
        self._keys = keys
        self._keyed = PerKey(keyed) if keyed is not None else None
        changed = reported(BREAKER_OPEN, log, "stt")
        self._breakers = {p.name: CircuitBreaker(p.name, failures, cooldown_s, on_change=changed)
                          for p in self.providers}

    @property
    def primary(self) -> SttProvider:
        return self.providers[0]

    async def for_tenant(self, tenant: str) -> list[SttProvider]:
        """The chain as ``tenant`` uses it: its own key where it stored one, and without
        the providers that have no key at all (unless nothing else is left)."""
        if self._keys is None or self._keyed is None:
            return self.providers
        chain = []
        for provider in self.providers:
            key = await self._keys.get(tenant, provider.name) if provider.name in KEYED else None
            chain.append(self._keyed.get(provider.name, key) if key else provider)
        return [p for p in chain if p.usable] or chain

    def allow(self, provider: SttProvider) -> bool:
        breaker = self._breakers.get(provider.name)
        return breaker is None or breaker.allow()

    def succeeded(self, provider: SttProvider) -> None:
        if provider.name in self._breakers:
            self._breakers[provider.name].record_success()

    def failed(self, provider: SttProvider, exc: ProviderError) -> None:
        if provider.name in self._breakers:
            self._breakers[provider.name].record_failure(exc.retryable)

    def describe(self) -> dict[str, object]:
        return {"providers": [p.name for p in self.providers],
                "breakers": {name: b.state for name, b in self._breakers.items()}}

    async def start(self) -> None:
        for provider in self.providers:
            await provider.start()

    async def close(self) -> None:
        keyed = self._keyed.values() if self._keyed is not None else []
        for provider in [*self.providers, *keyed]:
            await provider.close()
