"""discord-edge: the only service that talks to Discord.

For now the process joins the bus and reports health; the Discord bot, voice bridge, DAVE
decryption and slash commands are issue #5. Until then the scene player
(``glyphoxa scene play``) is the edge: it speaks the same subjects.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from glyphoxa_bus.publisher import Publisher
from glyphoxa_runtime.service import run_service
from glyphoxa_runtime.settings import ServiceSettings, load_settings

log = logging.getLogger("glyphoxa.discord_edge")


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DISCORD_EDGE_", extra="ignore")

    enabled: bool = Field(False, description="connect bots (needs issue #5's voice bridge)")


class EdgeApp:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._stop = asyncio.Event()

    async def run(self) -> None:
        log.info("no Discord bots configured: the edge is idle (voice bridge: issue #5)")
        await self._stop.wait()

    async def shutdown(self) -> None:
        self._stop.set()

    def readiness(self) -> dict[str, object]:
        return {"ready": True, "bots": 0}


def main() -> None:
    settings = load_settings(Settings, "discord-edge")

    async def build(nc: Client, publisher: Publisher) -> EdgeApp:
        return EdgeApp(settings)

    asyncio.run(run_service("discord-edge", settings, build))


if __name__ == "__main__":
    main()
