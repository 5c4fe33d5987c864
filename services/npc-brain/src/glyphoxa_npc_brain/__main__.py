"""npc-brain: claims sessions, reads ``stt.*`` finals, publishes ``reply.<npc>`` + ``ctl.turn``."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from glyphoxa_bus.publisher import Publisher
from glyphoxa_bus.session import SessionContext
from glyphoxa_bus.streams import EVENTS
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_npc_brain.config import Settings
from glyphoxa_npc_brain.core import STAGE, BrainHandler
from glyphoxa_npc_brain.llm import LLMProvider, build_llm
from glyphoxa_npc_brain.metrics import BrainMetrics
from glyphoxa_runtime.logs import register_secret
from glyphoxa_runtime.service import StageApp, StageMetrics, run_service
from glyphoxa_runtime.settings import load_settings


def input_filters(subjects: SessionSubjects) -> list[str]:
    return [subjects.stt("*")]


class BrainApp:
    """The stage replica plus the LLM it shares between its sessions."""

    def __init__(self, stage: StageApp, llm: LLMProvider):
        self.stage, self.llm = stage, llm

    async def run(self) -> None:
        await self.stage.run()

    async def shutdown(self) -> None:
        try:
            await self.stage.shutdown()
        finally:
            await self.llm.close()

    def readiness(self) -> dict[str, object]:
        return {**self.stage.readiness(), "llm": self.llm.describe()}


async def build_app(nc: Client, publisher: Publisher, settings: Settings) -> BrainApp:
    metrics = BrainMetrics()
    llm = await build_llm(settings, on_usage=metrics.count_usage)
    policy = settings.turn_policy()

    def handler(ctx: SessionContext) -> BrainHandler:
        return BrainHandler(ctx.subjects, ctx.publisher, llm, policy, metrics, stage=ctx.stage)

    stage = StageApp(
        nc,
        publisher,
        settings,
        STAGE,
        EVENTS,
        input_filters,
        handler,
        StageMetrics(STAGE),
        capacity=settings.capacity,
    )
    return BrainApp(stage, llm)


def main() -> None:
    settings = load_settings(Settings, "npc-brain")
    for secret in settings.secrets():  # second line of defence: scrubbed from any log line
        register_secret(secret)

    async def build(nc: Client, publisher: Publisher) -> BrainApp:
        return await build_app(nc, publisher, settings)

    asyncio.run(run_service(STAGE, settings, build))


if __name__ == "__main__":
    main()
