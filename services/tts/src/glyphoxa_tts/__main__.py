"""tts: claims sessions, speaks ``reply.<npc>`` sentences, publishes ``audio.out.<npc>``."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from glyphoxa_bus.publisher import Publisher
from glyphoxa_bus.streams import EVENTS
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_runtime.logs import register_secret
from glyphoxa_runtime.service import StageApp, serve
from glyphoxa_runtime.settings import load_settings
from glyphoxa_runtime.tenant_keys import TenantSecrets
from glyphoxa_tts import metrics
from glyphoxa_tts.config import Settings
from glyphoxa_tts.core import TtsSession
from glyphoxa_tts.providers import ProviderSet

STAGE = "tts"


class TtsApp(StageApp):
    """The tts replica: a ``StageApp`` that owns the process's providers."""

    def __init__(self, nc: Client, publisher: Publisher, settings: Settings,
                 providers: ProviderSet):
        self.providers = providers
        pump = asyncio.Lock()  # every session's replies take turns through it (TtsSession)
        super().__init__(
            nc, publisher, settings, STAGE, EVENTS, input_filters,
            lambda ctx: TtsSession(ctx, providers, settings, pump), metrics.STAGE,
            capacity=settings.capacity)

    async def shutdown(self) -> None:
        try:
            await super().shutdown()
        finally:
            await self.providers.aclose()

    def readiness(self) -> dict[str, object]:
        return {**super().readiness(), "provider": self.providers.default.name}


def input_filters(subjects: SessionSubjects) -> list[str]:
    return [subjects.reply("*")]


def main() -> None:
    settings = load_settings(Settings, "tts")
    register_secret(settings.elevenlabs_api_key.get_secret_value())

    async def build(nc: Client, publisher: Publisher) -> TtsApp:
        # loading a voice takes a moment of CPU: keep the loop free while it happens
        keys = TenantSecrets(nc, settings.nats.secrets_key.get_secret_value(), STAGE)
        providers = await asyncio.to_thread(ProviderSet, settings, None, keys)
        return TtsApp(nc, publisher, settings, providers)

    serve(STAGE, settings, build)


if __name__ == "__main__":
    main()
