"""npc-brain: claims sessions, reads ``stt.*`` finals, publishes ``reply.<npc>`` + ``ctl.turn``;
asks session-control for the addressed NPC's memories (``glxapi.memory.recall``) and makes
recaps of ended sessions when session-control asks (``glxrecap.make``)."""

from __future__ import annotations

from nats.aio.client import Client

from glyphoxa_bus.publisher import Publisher
from glyphoxa_bus.session import SessionContext
from glyphoxa_bus.streams import EVENTS
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_npc_brain.config import Settings
from glyphoxa_npc_brain.core import STAGE, BrainHandler
from glyphoxa_npc_brain.llm.pool import KeyResolver, LLMPool
from glyphoxa_npc_brain.metrics import BrainMetrics
from glyphoxa_npc_brain.recall import Recaller
from glyphoxa_npc_brain.recaps import RecapMaker
from glyphoxa_runtime.logs import register_secret
from glyphoxa_runtime.service import StageApp, StageMetrics, serve
from glyphoxa_runtime.settings import load_settings
from glyphoxa_runtime.tenant_keys import TenantSecrets


def input_filters(subjects: SessionSubjects) -> list[str]:
    return [subjects.stt("*")]


class BrainApp:
    """The stage replica plus the LLM providers it shares between its sessions, and the
    recaps it makes with them between turns."""

    def __init__(self, stage: StageApp, llms: LLMPool, recaps: RecapMaker):
        self.stage, self.llms, self.recaps = stage, llms, recaps

    async def run(self) -> None:
        await self.recaps.start()
        await self.stage.run()

    async def shutdown(self) -> None:
        try:
            await self.recaps.close()
            await self.stage.shutdown()
        finally:
            await self.llms.close()

    def readiness(self) -> dict[str, object]:
        primary = self.llms.primary
        return {
            **self.stage.readiness(),
            "llm": primary.describe() if primary is not None else {},
            "llms": self.llms.describe(),
        }


async def build_app(
    nc: Client, publisher: Publisher, settings: Settings, key_for: KeyResolver | None = None
) -> BrainApp:
    """``key_for(tenant, provider)``: a tenant's own cloud API key, or None for the
    configured one (see ``llm.pool``); without it every tenant uses the configured keys."""
    metrics = BrainMetrics()
    llms = LLMPool(settings, key_for=key_for, metrics=metrics)
    await llms.start()  # the configured provider, before the first claim (the model loads)
    policy = settings.turn_policy()

    recaller = Recaller(nc, metrics, timeout_s=settings.recall_timeout_ms / 1000,
                        k=settings.recall_k, enabled=settings.recall)

    def handler(ctx: SessionContext) -> BrainHandler:
        return BrainHandler(ctx.subjects, ctx.publisher, llms, policy, metrics, stage=ctx.stage,
                            recaller=recaller)

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
    recaps = RecapMaker(nc, llms, metrics, quiet_s=settings.recap_quiet_s,
                        timeout_s=settings.recap_timeout_s, max_tokens=settings.recap_max_tokens,
                        context_tokens=settings.llm_ctx, usage=publisher, stage=STAGE)
    return BrainApp(stage, llms, recaps)


def main() -> None:
    settings = load_settings(Settings, "npc-brain")
    for secret in settings.secrets():  # second line of defence: scrubbed from any log line
        register_secret(secret)

    async def build(nc: Client, publisher: Publisher) -> BrainApp:
        keys = TenantSecrets(nc, settings.nats.secrets_key.get_secret_value(), STAGE)
        return await build_app(nc, publisher, settings, key_for=keys.get if keys.enabled else None)

    serve(STAGE, settings, build)


if __name__ == "__main__":
    main()
