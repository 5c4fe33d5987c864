"""tts providers behind one interface, and the set a process picks them from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from glyphoxa_campaign.model import FAKE, VoiceSpec
from glyphoxa_runtime.breaker import CircuitBreaker, reported
from glyphoxa_runtime.providers import ProviderError, ProviderUnavailable
from glyphoxa_runtime.tenant_keys import PerKey, TenantSecrets
from glyphoxa_tts.config import Settings
from glyphoxa_tts.metrics import BREAKER_OPEN
from glyphoxa_tts.providers.base import OUTPUT_RATE, TTSCapabilities, TTSProvider

__all__ = ["OUTPUT_RATE", "PROVIDER_NAMES", "ProviderSet", "TTSCapabilities", "TTSProvider",
           "build_provider"]

log = logging.getLogger(__name__)

PROVIDER_NAMES = ("piper", "espeak", "fake", "elevenlabs")
FALLBACK = "espeak"
"""The last resort: no model file, no network, never fails to load."""
KEYED = frozenset({"elevenlabs"})
"""Providers a tenant may bring its own API key for (stored under the same name)."""


def build_provider(name: str, settings: Settings, api_key: str | None = None) -> TTSProvider:
    """Construct one provider (loads its model; blocking). Raises ``ProviderUnavailable``.
    ``api_key`` replaces the configured key of a cloud provider (a tenant's own)."""
    timeout, parallel = settings.synth_timeout_s, settings.max_parallel_synth
    if name == "piper":
        from glyphoxa_tts.providers.piper import PiperProvider

        return PiperProvider(settings.piper_model_path or None, timeout, parallel,
                             threads=settings.piper_threads, spin=settings.piper_spin)
    if name == "espeak":
        from glyphoxa_tts.providers.espeak import EspeakProvider

        return EspeakProvider(timeout)
    if name == "fake":
        from glyphoxa_tts.providers.fake import FakeProvider

        return FakeProvider(timeout)
    if name == "elevenlabs":
        from glyphoxa_tts.providers.elevenlabs import ElevenLabsProvider

        return ElevenLabsProvider(
            api_key or settings.elevenlabs_api_key.get_secret_value(),
            base_url=settings.elevenlabs_base_url,
            model=settings.elevenlabs_model, default_voice_id=settings.elevenlabs_default_voice_id,
            output_format=settings.elevenlabs_output_format, timeout_s=timeout)
    raise ProviderUnavailable(name, f"unknown tts provider (choose from {PROVIDER_NAMES})")


class ProviderSet:
    """The providers of one process: the default one (loaded at start-up), the ones NPC
    voices ask for (loaded on first use), espeak wherever another cannot load, and one
    instance per tenant that stored its own key for a cloud provider."""

    def __init__(self, settings: Settings, providers: Mapping[str, TTSProvider] | None = None,
                 keys: TenantSecrets | None = None):
        """``providers``: ready instances by name (tests inject slow or failing ones);
        ``keys``: where tenants' own provider keys come from."""
        self._settings = settings
        self._keys = keys
        # a tenant's own key: cloud clients only, nothing heavy to load
        self._keyed: PerKey[TTSProvider] = PerKey(
            lambda name, key: build_provider(name, settings, api_key=key))
        self._providers: dict[str, TTSProvider] = dict(providers or {})
        self._lock = asyncio.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}
        self.default = self._providers.get(settings.provider) or self._load(settings.provider)
        self.fallback()  # loaded with the default (piper's model takes a moment)

    def breaker(self, name: str) -> CircuitBreaker:
        if name not in self._breakers:
            self._breakers[name] = CircuitBreaker(
                name, self._settings.breaker_failures, self._settings.breaker_cooldown_s,
                on_change=reported(BREAKER_OPEN, log, "tts"))
        return self._breakers[name]

    def succeeded(self, provider: TTSProvider) -> None:
        self.breaker(provider.name).record_success()

    def failed(self, provider: TTSProvider, exc: ProviderError) -> None:
        self.breaker(provider.name).record_failure(exc.retryable)

    async def for_voice(self, voice: VoiceSpec, tenant: str | None = None) -> TTSProvider:
        """The voice's provider (with ``tenant``'s own key if it stored one), or espeak
        while that provider's breaker is open."""
        provider = await self._chosen(voice)
        wanted = voice.provider or self._settings.provider  # even if it stood in for espeak
        if tenant and wanted in KEYED and self._keys is not None:
            key = await self._keys.get(tenant, wanted)
            if key:
                provider = self._keyed.get(wanted, key)
        if (provider.name not in (FALLBACK, self._settings.fallback)
                and not self.breaker(provider.name).allow()):
            return self.fallback()
        return provider

    async def _chosen(self, voice: VoiceSpec) -> TTSProvider:
        name = voice.provider or self._settings.provider
        if name == FAKE and self._settings.provider != FAKE:
            name = self._settings.provider  # a test double: only where the operator runs fakes
        if name in self._providers:
            return self._providers[name]
        if name not in PROVIDER_NAMES:
            log.warning("voice asks for unknown tts provider %r; using %s", name[:40],
                        self.default.name)
            return self.default
        async with self._lock:
            if name not in self._providers:
                await asyncio.to_thread(self._load, name)
        return self._providers[name]

    def fallback(self) -> TTSProvider:
        """``TTS_FALLBACK`` (espeak unless set to piper), loaded on first use."""
        name = self._settings.fallback
        return self._providers.get(name) or self._load(name)

    def _load(self, name: str) -> TTSProvider:
        try:
            provider = build_provider(name, self._settings)
        except ProviderUnavailable as exc:
            if name == FALLBACK:
                raise
            stand_in = FALLBACK if name == self._settings.fallback else self._settings.fallback
            log.warning("tts provider %s cannot load (%s); falling back to %s",
                        name, exc, stand_in)
            provider = self._providers.get(stand_in) or self._load(stand_in)
        provider.warm_up()
        self._providers[name] = provider
        log.info("tts provider ready", extra={
            "provider": name, "serves_as": provider.name,
            "native_rate": provider.capabilities.sample_rate})
        return provider

    def close(self) -> None:
        for provider in self._distinct():
            provider.close()

    async def aclose(self) -> None:
        for provider in self._distinct():
            await provider.aclose()

    def _distinct(self) -> list[TTSProvider]:
        every = [*self._providers.values(), *self._keyed.values()]
        return list({id(p): p for p in every}.values())
