"""session-control's bus door (``glxapi.*`` request/reply), as the edge's slash commands use it.

Every request names the tenant whose bot received the command and, for what the GM may
do, the Discord member who asked (:class:`Caller`): session-control checks the guild and
the campaign's GM role and answers with a readable reason when it refuses. A request
session-control does not answer becomes :class:`ControlUnavailable`.
"""

from __future__ import annotations

from typing import TypeVar

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel, ValidationError

from glyphoxa_bus.connection import principal
from glyphoxa_events.api import (
    ApiReply,
    Caller,
    FindSession,
    ListNpcs,
    MuteNpc,
    NpcsReply,
    SearchCampaign,
    SearchReply,
    SpeakNpc,
    StartSession,
    StopSession,
    TaughtReply,
    TeachNpc,
)
from glyphoxa_events.subjects import api_subject

R = TypeVar("R", bound=BaseModel)


class ControlUnavailable(Exception):
    """session-control did not answer (not running, or too slow)."""


class ControlClient:
    def __init__(self, nc: Client, tenant: str, timeout_s: float = 5.0):
        self._nc, self.tenant, self._timeout_s = nc, tenant, timeout_s

    async def start(self, campaign: str, guild_id: str, channel_id: str,
                    caller: Caller) -> ApiReply:
        return await self._call("session.start", StartSession(
            tenant=self.tenant, campaign=campaign, edge="discord", guild_id=guild_id,
            channel_id=channel_id, caller=caller), ApiReply)

    async def stop(self, session: str, reason: str, caller: Caller | None) -> ApiReply:
        return await self._call("session.stop", StopSession(
            tenant=self.tenant, session=session, reason=reason, caller=caller), ApiReply)

    async def find(self, guild_id: str) -> ApiReply:
        return await self._call("session.find", FindSession(tenant=self.tenant,
                                                            guild_id=guild_id), ApiReply)

    async def npcs(self, session: str) -> NpcsReply:
        return await self._call("npc.list", ListNpcs(tenant=self.tenant, session=session),
                                NpcsReply)

    async def mute(self, session: str, npc: str, muted: bool, caller: Caller) -> NpcsReply:
        return await self._call("npc.mute", MuteNpc(
            tenant=self.tenant, session=session, npc=npc, muted=muted, caller=caller), NpcsReply)

    async def speak(self, session: str, npc: str, text: str, caller: Caller) -> ApiReply:
        return await self._call("npc.speak", SpeakNpc(
            tenant=self.tenant, session=session, npc=npc, text=text, caller=caller), ApiReply)

    async def teach(self, session: str, npc: str, text: str, caller: Caller) -> TaughtReply:
        return await self._call("npc.teach", TeachNpc(
            tenant=self.tenant, session=session, npc=npc, text=text, caller=caller), TaughtReply)

    async def search(self, session: str, q: str, caller: Caller) -> SearchReply:
        return await self._call("campaign.search", SearchCampaign(
            tenant=self.tenant, session=session, q=q, caller=caller), SearchReply)

    async def _call(self, verb: str, body: BaseModel, reply: type[R]) -> R:
        return await ask(self._nc, verb, body, reply, self._timeout_s)


async def ask(nc: Client, verb: str, body: BaseModel, reply: type[R], timeout_s: float) -> R:
    """session-control's answer to ``body`` on ``glxapi.<verb>``, read as ``reply``;
    ControlUnavailable when it does not answer in time or answers something else."""
    try:
        msg = await nc.request(api_subject(verb, principal(nc)), body.model_dump_json().encode(),
                               timeout=timeout_s)
    except (NatsTimeout, NoRespondersError):
        raise ControlUnavailable(f"session-control did not answer within {timeout_s:g} s") from None
    try:
        return reply.model_validate_json(msg.data, strict=True)
    except ValidationError:
        raise ControlUnavailable(f"session-control answered {verb} with something that is "
                                 f"not a {reply.__name__}") from None
