"""stt: claims sessions, buffers vad utterances, publishes one final transcript each.

Run as ``glyphoxa-stt`` or ``python -m glyphoxa_stt``; configured by ``STT_*``, ``NATS_*``
and ``METRICS_*`` environment variables (see ``config.Settings``).
"""

from __future__ import annotations

import asyncio
import functools
import logging

from nats.aio.client import Client

from glyphoxa_bus.publisher import Publisher
from glyphoxa_bus.session import SessionContext
from glyphoxa_bus.streams import EVENTS
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_runtime.service import StageApp, StageMetrics, run_service
from glyphoxa_runtime.settings import load_settings
from glyphoxa_stt.config import Settings
from glyphoxa_stt.core import Limits, SttSession
from glyphoxa_stt.providers import SttProvider, build_provider

log = logging.getLogger("glyphoxa.stt")

STAGE = "stt"


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_utterance_s=settings.max_utterance_s,
        max_open_utterances=settings.max_open_utterances,
        utterance_idle_s=settings.utterance_idle_s,
        language=settings.language,
        prompt_max_chars=settings.prompt_max_chars,
    )


def input_filters(subjects: SessionSubjects) -> list[str]:
    return [subjects.vad("*")]


class SttApp:
    """The stage replica plus the provider it loaded once for all its sessions."""

    def __init__(self, stage: StageApp, provider: SttProvider):
        self._stage = stage
        self._provider = provider

    async def run(self) -> None:
        await self._stage.run()

    async def shutdown(self) -> None:
        try:
            await self._stage.shutdown()
        finally:
            await self._provider.close()

    def readiness(self) -> dict[str, object]:
        return {**self._stage.readiness(), "provider": self._provider.name}


async def build_app(settings: Settings, nc: Client, publisher: Publisher) -> SttApp:
    provider = build_provider(settings)
    await provider.start()
    limits = limits_from(settings)

    def handler(ctx: SessionContext) -> SttSession:
        return SttSession(ctx, provider.for_session(), limits)

    stage = StageApp(nc, publisher, settings, STAGE, EVENTS, input_filters, handler,
                     StageMetrics(STAGE), capacity=settings.capacity)
    log.info("stt ready", extra={"provider": provider.name, "capacity": settings.capacity})
    return SttApp(stage, provider)


def main() -> None:
    settings = load_settings(Settings, "stt")
    asyncio.run(run_service(STAGE, settings, functools.partial(build_app, settings)))


if __name__ == "__main__":
    main()
