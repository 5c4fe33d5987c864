"""stt: claims sessions, buffers vad utterances, publishes one final transcript each.

Run as ``glyphoxa-stt`` or ``python -m glyphoxa_stt``; configured by ``STT_*``, ``NATS_*``
and ``METRICS_*`` environment variables (see ``config.Settings``).
"""

from __future__ import annotations

import functools
import logging

from nats.aio.client import Client

from glyphoxa_bus.publisher import Publisher
from glyphoxa_bus.session import SessionContext
from glyphoxa_bus.streams import EVENTS
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_runtime.logs import register_secret
from glyphoxa_runtime.service import StageApp, StageMetrics, serve
from glyphoxa_runtime.settings import load_settings
from glyphoxa_runtime.tenant_keys import TenantSecrets
from glyphoxa_stt.chain import SttChain
from glyphoxa_stt.config import Settings
from glyphoxa_stt.core import Limits, SttSession
from glyphoxa_stt.providers import build_provider

log = logging.getLogger("glyphoxa.stt")

STAGE = "stt"


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_utterance_s=settings.max_utterance_s,
        max_open_utterances=settings.max_open_utterances,
        utterance_idle_s=settings.utterance_idle_s,
        language=settings.language,
        prompt_max_chars=settings.prompt_max_chars,
        stream_finish_s=settings.stream_finish_s,
        partials=settings.partials,
        early_finals=settings.early_finals,
        transcribe_on_pause=settings.transcribe_on_pause,
        endpoint_lag_s=settings.deepgram_endpointing_ms / 1000,
    )


def input_filters(subjects: SessionSubjects) -> list[str]:
    return [subjects.vad("*")]


class SttApp:
    """The stage replica plus the providers it loaded once for all its sessions."""

    def __init__(self, stage: StageApp, chain: SttChain):
        self._stage = stage
        self._chain = chain

    async def run(self) -> None:
        await self._stage.run()

    async def shutdown(self) -> None:
        try:
            await self._stage.shutdown()
        finally:
            await self._chain.close()

    def readiness(self) -> dict[str, object]:
        return {**self._stage.readiness(), "provider": self._chain.primary.name,
                "chain": self._chain.describe()}


def build_chain(settings: Settings, keys: TenantSecrets | None = None) -> SttChain:
    return SttChain(
        [build_provider(settings, name) for name in settings.chain()],
        failures=settings.breaker_failures, cooldown_s=settings.breaker_cooldown_s, keys=keys,
        keyed=lambda name, key: build_provider(settings, name, api_key=key))


async def build_app(settings: Settings, nc: Client, publisher: Publisher) -> SttApp:
    keys = TenantSecrets(nc, settings.nats.secrets_key.get_secret_value(), STAGE)
    chain = build_chain(settings, keys)
    await chain.start()
    limits = limits_from(settings)

    def handler(ctx: SessionContext) -> SttSession:
        return SttSession(ctx, chain, limits)

    stage = StageApp(nc, publisher, settings, STAGE, EVENTS, input_filters, handler,
                     StageMetrics(STAGE), capacity=settings.capacity)
    log.info("stt ready", extra={"providers": list(settings.chain()),
                                 "capacity": settings.capacity})
    return SttApp(stage, chain)


def main() -> None:
    settings = load_settings(Settings, "stt")
    for secret in settings.secrets():  # second line of defence: scrubbed from any log line
        register_secret(secret)
    serve(STAGE, settings, functools.partial(build_app, settings))


if __name__ == "__main__":
    main()
