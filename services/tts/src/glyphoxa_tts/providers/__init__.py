"""tts providers behind one interface, and the set a process picks them from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_runtime.breaker import CircuitBreaker
from glyphoxa_runtime.providers import ProviderError, ProviderUnavailable
from glyphoxa_tts.config import Settings
from glyphoxa_tts.metrics import BREAKER_OPEN
from glyphoxa_tts.providers.base import OUTPUT_RATE, TTSCapabilities, TTSProvider

__all__ = ["OUTPUT_RATE", "PROVIDER_NAMES", "ProviderSet", "TTSCapabilities", "TTSProvider",
           "build_provider"]

log = logging.getLogger(__name__)

PROVIDER_NAMES = ("piper", "espeak", "fake", "elevenlabs")
FALLBACK = "espeak"


def build_provider(name: str, settings: Settings) -> TTSProvider:
    """Construct one provider (loads its model; blocking). Raises ``ProviderUnavailable``."""
    timeout, parallel = settings.synth_timeout_s, settings.max_parallel_synth
    if name == "piper":
        from glyphoxa_tts.providers.piper import PiperProvider

        return PiperProvider(settings.piper_model_path or None, timeout, parallel)
    if name == "espeak":
        from glyphoxa_tts.providers.espeak import EspeakProvider

        return EspeakProvider(timeout)
    if name == "fake":
        from glyphoxa_tts.providers.fake import FakeProvider

        return FakeProvider(timeout)
    if name == "elevenlabs":
        from glyphoxa_tts.providers.elevenlabs import ElevenLabsProvider

        return ElevenLabsProvider(
            settings.elevenlabs_api_key.get_secret_value(), base_url=settings.elevenlabs_base_url,
            model=settings.elevenlabs_model, default_voice_id=settings.elevenlabs_default_voice_id,
            output_format=settings.elevenlabs_output_format, timeout_s=timeout)
    raise ProviderUnavailable(name, f"unknown tts provider (choose from {PROVIDER_NAMES})")


def _breaker_changed(name: str, state: str) -> None:
    BREAKER_OPEN.labels(provider=name).set({"open": 1.0, "half_open": 0.5}.get(state, 0.0))
    log.warning("tts provider %s circuit breaker %s", name, state.replace("_", "-"),
                extra={"provider": name, "breaker": state})


class ProviderSet:
    """The providers of one process: the default one (loaded at start-up), the ones NPC
    voices ask for (loaded on first use), and espeak wherever another cannot load."""

    def __init__(self, settings: Settings, providers: Mapping[str, TTSProvider] | None = None):
        """``providers``: ready instances by name (tests inject slow or failing ones)."""
        self._settings = settings
        self._providers: dict[str, TTSProvider] = dict(providers or {})
        self._lock = asyncio.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}
        self.default = self._providers.get(settings.provider) or self._load(settings.provider)

    def breaker(self, name: str) -> CircuitBreaker:
        if name not in self._breakers:
            self._breakers[name] = CircuitBreaker(
                name, self._settings.breaker_failures, self._settings.breaker_cooldown_s,
                on_change=_breaker_changed)
        return self._breakers[name]

    def succeeded(self, provider: TTSProvider) -> None:
        self.breaker(provider.name).record_success()

    def failed(self, provider: TTSProvider, exc: ProviderError) -> None:
        self.breaker(provider.name).record_failure(exc.retryable)

    async def for_voice(self, voice: VoiceSpec) -> TTSProvider:
        """The voice's provider, or espeak while that provider's breaker is open."""
        provider = await self._chosen(voice)
        if provider.name != FALLBACK and not self.breaker(provider.name).allow():
            return self.fallback()
        return provider

    async def _chosen(self, voice: VoiceSpec) -> TTSProvider:
        name = voice.provider or self._settings.provider
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
        return self._providers.get(FALLBACK) or self._load(FALLBACK)

    def _load(self, name: str) -> TTSProvider:
        try:
            provider = build_provider(name, self._settings)
        except ProviderUnavailable as exc:
            if name == FALLBACK:
                raise
            log.warning("tts provider %s cannot load (%s); falling back to %s",
                        name, exc, FALLBACK)
            provider = self.fallback()
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
        return list({id(p): p for p in self._providers.values()}.values())
