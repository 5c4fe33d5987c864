"""discord-edge: the only service that talks to Discord.

It runs the bots of the tenants assigned to it (``DISCORD_EDGE_NAME``), as session-control
lists them (``glxapi.edge.bots``, sealed with NATS_EDGE_KEY), and follows changes: a new
tenant's bot starts, a removed or disabled one stops, a changed token restarts its bot.
Each bot serves the slash commands and bridges its voice channels to the sessions' subjects
(docs/discord.md). The edge heartbeats the sessions it bridges, so session-control knows
they have an edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter

import aiohttp
import discord
import discord.http
import yarl
from discord.gateway import DiscordWebSocket
from nats.aio.client import Client
from prometheus_client import REGISTRY
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from glyphoxa_bus.auth import TENANT_EDGE_PREFIX
from glyphoxa_bus.connection import principal
from glyphoxa_bus.heartbeat import EDGE_ROLE, HeartbeatPublisher
from glyphoxa_bus.publisher import Publisher, Resender
from glyphoxa_discord_edge.bot import TenantBot
from glyphoxa_discord_edge.bots import BotDirectory, BotsUnavailable
from glyphoxa_discord_edge.metrics import EdgeCollector
from glyphoxa_events.api import Bot
from glyphoxa_events.tokens import Token
from glyphoxa_runtime.service import serve
from glyphoxa_runtime.settings import ServiceSettings, load_settings

log = logging.getLogger("glyphoxa.discord_edge")


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DISCORD_EDGE_", extra="ignore")

    name: Token = Field("default", description="this edge's name: it runs the bots of the "
                                                "tenants whose discord_edge names it")
    api_base: str = Field("https://discord.com/api/v10", pattern=r"^https?://",
                          description="Discord's REST API root (a proxy, or a test's fake)")
    gateway_url: str = Field("wss://gateway.discord.gg/", pattern=r"^wss?://",
                             description="Discord's gateway, first connect (a proxy, or a "
                                         "test's fake; resumes use the URL READY names)")
    retry_s: float = Field(10.0, gt=0, le=600, description="longest wait before asking "
                           "session-control for the bots again after it failed (1 s, "
                           "doubling up to this)")
    resend_limit: int = Field(6000, ge=100, le=1_000_000, description=(
        "players' frames (20 ms each, all sessions of this edge together) kept while the "
        "broker has not stored them, to publish again in order when it is back; beyond this "
        "the oldest are dropped and counted (6000: 4 s of 30 players talking at once)"))


class EdgeApp:
    def __init__(self, settings: Settings, nc: Client, publisher: Publisher):
        self._settings, self._nc = settings, nc
        # players' words cannot be redone: kept until stored, sent again after an outage
        self._publisher = Resender(publisher, nc, limit=settings.resend_limit)
        self._directory = BotDirectory(nc, settings.name,
                                       settings.nats.edge_key.get_secret_value())
        self._bots: dict[str, tuple[Bot, TenantBot, asyncio.Task[None]]] = {}
        who = principal(nc)  # a tenant's own edge may put its heartbeat under its name only
        self._heartbeat = HeartbeatPublisher(
            nc, EDGE_ROLE, f"discord-{settings.name}-{os.getpid()}", self._sessions,
            owner=who if who.startswith(TENANT_EDGE_PREFIX) else None)
        self._problem = ""
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopped_bots: Counter[str] = Counter()  # counts of bots no longer running
        REGISTRY.register(EdgeCollector(self._counts, self._bot_states,
                                        lambda: len(self._sessions())))

    def _counts(self) -> Counter[str]:
        total = Counter(self._stopped_bots)
        for _, bot, _ in self._bots.values():
            total.update(bot.totals.counts())
        total["bus.resent"] = self._publisher.resent
        total["bus.dropped"] = self._publisher.dropped
        return total

    def _bot_states(self) -> tuple[int, int]:
        return len(self._bots), sum(1 for _, bot, _ in self._bots.values() if bot.is_ready())

    def _sessions(self) -> list[str]:
        return [s for _, bot, _ in self._bots.values() for s in bot.sessions()]

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat.run(), name="edge-heartbeat")
        if not self._settings.nats.edge_key.get_secret_value():
            log.warning("NATS_EDGE_KEY is not set: this edge runs no Discord bot (sessions can "
                        "still be played by another edge, e.g. the scene player)")
            self._problem = "NATS_EDGE_KEY is not set"
            await self._stop.wait()
            heartbeat.cancel()
            return
        await self._directory.watch(self.reload)
        wait = 1.0
        while not self._stop.is_set() and not await self.reload():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)
            wait = min(wait * 2, self._settings.retry_s)
        await self._stop.wait()
        heartbeat.cancel()

    async def reload(self) -> bool:
        """Match the running bots to session-control's list; False when it could not be had."""
        async with self._lock:
            try:
                wanted = {b.tenant: b for b in await self._directory.fetch()}
            except BotsUnavailable as exc:
                self._problem = str(exc)
                log.warning("no bot list yet: %s", exc)
                return False
            self._problem = ""
            for tenant, (bot, _, _) in list(self._bots.items()):
                if wanted.get(tenant) != bot:
                    await self._stop_bot(tenant)
            for tenant, bot in wanted.items():
                if tenant not in self._bots:
                    self._start_bot(bot)
            log.info("bots", extra={"edge": self._settings.name, "tenants": sorted(wanted)})
            return True

    def _start_bot(self, bot: Bot) -> None:
        client = TenantBot(bot, self._nc, self._publisher, self._heartbeat.poke)

        async def run() -> None:
            try:
                await client.start(bot.token, reconnect=True)
            except Exception as exc:  # a bad token must not take the other tenants down
                log.error("bot stopped: %s", why_stopped(exc), extra={"tenant": bot.tenant})

        self._bots[bot.tenant] = (bot, client, asyncio.create_task(run(), name="bot"))

    async def _stop_bot(self, tenant: str) -> None:
        _, client, task = self._bots.pop(tenant)
        with contextlib.suppress(Exception):
            await client.close()
        self._stopped_bots.update(client.totals.counts())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def shutdown(self) -> None:
        for tenant in list(self._bots):
            await self._stop_bot(tenant)
        await self._directory.close()
        await self._heartbeat.stop()
        self._stop.set()

    def readiness(self) -> dict[str, object]:
        connected = sum(1 for _, bot, _ in self._bots.values() if bot.is_ready())
        return {"ready": True, "problem": self._problem, "bots": len(self._bots),
                "bots_connected": connected, "sessions": len(self._sessions())}


def why_stopped(exc: Exception) -> str:
    """A bot's end in words an operator can act on (never the token)."""
    if isinstance(exc, discord.LoginFailure):
        return "Discord refused the bot token: set the tenant's bot_token anew"
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return "the bot lacks an intent it needs (docs/discord.md, creating the bot)"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return f"cannot reach Discord ({type(exc).__name__}); it retries when the bots change"
    return f"{type(exc).__name__}: {exc}"[:300]


def main() -> None:
    settings = load_settings(Settings, "discord-edge")
    discord.http.Route.BASE = settings.api_base  # type: ignore[misc]
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)

    async def build(nc: Client, publisher: Publisher) -> EdgeApp:
        return EdgeApp(settings, nc, publisher)

    serve("discord-edge", settings, build)


if __name__ == "__main__":
    main()
