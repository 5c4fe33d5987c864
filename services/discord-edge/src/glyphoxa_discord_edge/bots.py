"""Which bots this edge runs: asked of session-control at start-up and whenever it says they
changed.

A tenant's bot runs on the edge its record names (``discord_edge``, this edge's
``DISCORD_EDGE_NAME``). session-control answers ``glxapi.edge.bots`` with the tokens sealed
with the bus edge key (NATS_EDGE_KEY, which the stages never get), and publishes
``glxapi.edge.changed`` (no secrets) when a tenant's token, guilds, state or edge change;
the edge then asks again and starts, restarts or stops bots to match.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from cryptography.fernet import Fernet, InvalidToken
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import ValidationError

from glyphoxa_discord_edge.control import ControlUnavailable, ask
from glyphoxa_events.api import Bot, BotList, BotsReply, EdgeChanged, GetBots
from glyphoxa_events.subjects import api_subject
from glyphoxa_runtime.logs import register_secret

log = logging.getLogger("glyphoxa.discord_edge.bots")

SEALED_TTL_S = 60


class BotsUnavailable(Exception):
    """The bot list could not be had; the message says why."""


class BotDirectory:
    """The bots of edge ``name``; ``watch(on_change)`` calls back with each new list."""

    def __init__(self, nc: Client, name: str, edge_key: str, timeout_s: float = 5.0):
        self._nc, self.name, self._timeout_s = nc, name, timeout_s
        self._fernet = Fernet(edge_key.encode()) if edge_key else None
        self._sub = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def fetch(self) -> list[Bot]:
        if self._fernet is None:
            raise BotsUnavailable("NATS_EDGE_KEY is not set: session-control cannot hand this "
                                  "edge any bot token")
        try:
            reply = await ask(self._nc, "edge.bots", GetBots(edge=self.name), BotsReply,
                              self._timeout_s)
        except ControlUnavailable as exc:
            raise BotsUnavailable(str(exc)) from None
        if not reply.ok:
            raise BotsUnavailable(reply.error)
        try:
            bots = BotList.model_validate_json(
                self._fernet.decrypt(reply.sealed.encode(), ttl=SEALED_TTL_S)).bots
        except (InvalidToken, ValidationError):
            raise BotsUnavailable("the bot list could not be opened: NATS_EDGE_KEY differs "
                                  "from session-control's, or the answer is stale") from None
        for bot in bots:
            register_secret(bot.token)  # scrubbed from any log line
        return list(bots)

    async def watch(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """Call ``on_change`` whenever session-control says this edge's bots changed."""

        async def changed(msg: Msg) -> None:
            try:
                edge = EdgeChanged.model_validate_json(msg.data, strict=True).edge
            except ValidationError:
                return
            if edge == self.name:
                task = asyncio.create_task(on_change(), name="edge-bots-changed")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        self._sub = await self._nc.subscribe(api_subject("edge.changed"), cb=changed)

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
