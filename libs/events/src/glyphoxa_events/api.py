"""Request/reply bodies of session-control's NATS API (``glxapi.session.*``, ``glxapi.npc.*``,
``glxapi.memory.recall``).

This is the bus-internal door, used by edges (e.g. discord-edge's slash commands): the
tenant and campaign must already exist in session-control's database. People and tools
use the admin HTTP API instead.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from glyphoxa_campaign.text import refuse_nul
from glyphoxa_events.tokens import Token


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DiscordId = Annotated[str, Field(pattern=r"^[0-9]{1,20}$")]


class Caller(_Body):
    """Who ran a slash command (discord-edge). session-control refuses guilds the tenant does
    not allow, sessions of another guild, and control commands from members without the
    campaign's GM role (``gm_role``; without one, members who may manage the server)."""

    guild_id: DiscordId
    user_id: DiscordId
    roles: tuple[str, ...] = Field((), max_length=250,
                                   description="the member's roles, ids and names")
    manages_guild: bool = Field(False, description="the member may manage the server")


class StartSession(_Body):
    tenant: Token
    campaign: Token | None = Field(
        None, description="id of a campaign stored for the tenant; its only one when omitted")
    session: Token | None = Field(None, description="chosen by session-control when omitted")
    edge: str = Field("scene", pattern=r"^(discord|scene|sim)$")
    guild_id: DiscordId | None = None
    channel_id: DiscordId | None = None
    caller: Caller | None = None


class StopSession(_Body):
    tenant: Token
    session: Token
    reason: str = Field("stopped by request", min_length=1, max_length=500)
    caller: Caller | None = None


class FindSession(_Body):
    """The live (pending or active) session of a Discord guild, if any."""

    tenant: Token
    guild_id: DiscordId


class ListNpcs(_Body):
    tenant: Token
    session: Token


class MuteNpc(_Body):
    """Mute or unmute one NPC of a live session, or every NPC (``*``)."""

    tenant: Token
    session: Token
    npc: Token | Literal["*"]
    muted: bool
    caller: Caller | None = None


class SpeakNpc(_Body):
    """The GM puppets an NPC: ``text`` is spoken in its voice, without the LLM."""

    tenant: Token
    session: Token
    npc: Token
    text: str = Field(min_length=1, max_length=1000)
    caller: Caller | None = None


class TeachNpc(_Body):
    """The GM teaches an NPC of the running session a fact (``/npc teach``): the NPC knows it
    from its next turn on, and in every later session of the campaign."""

    tenant: Token
    session: Token
    npc: Token
    text: str = Field(min_length=1, max_length=300)
    caller: Caller | None = None

    @model_validator(mode="after")
    def _storable(self) -> TeachNpc:
        return refuse_nul(self)


class TaughtReply(_Body):
    ok: bool
    error: str = ""
    fact_id: str = ""


class SearchCampaign(_Body):
    """The GM searches the transcripts of the running session's campaign (``/recall``)."""

    tenant: Token
    session: Token
    q: str = Field(min_length=1, max_length=500)
    limit: int = Field(10, ge=1, le=50)
    caller: Caller | None = None

    @model_validator(mode="after")
    def _storable(self) -> SearchCampaign:
        return refuse_nul(self)


class SearchHitInfo(_Body):
    session: Token
    role: Literal["player", "npc"]
    speaker: str = Field(max_length=64)
    npc: str | None = Field(None, max_length=64, description="the NPC a player's line went to")
    text: str = Field(max_length=4000)
    spoken_ns: int = Field(ge=0)


class SearchReply(_Body):
    ok: bool
    error: str = ""
    hits: tuple[SearchHitInfo, ...] = Field((), max_length=50, description="newest first")


class NpcInfo(_Body):
    token: Token
    name: str
    muted: bool


class NpcsReply(_Body):
    ok: bool
    error: str = ""
    npcs: tuple[NpcInfo, ...] = ()


class GetSession(_Body):
    tenant: Token
    session: Token


class SessionRecord(_Body):
    tenant: Token
    session: Token
    state: str
    edge: str
    campaign: str
    reason: str = ""
    guild_id: DiscordId | None = None
    channel_id: DiscordId | None = Field(None, description="the Discord voice channel")


class ApiReply(_Body):
    ok: bool
    error: str = ""
    session: SessionRecord | None = None


SECRET_NAME = r"^[a-z0-9][a-z0-9_]{0,63}$"


class GetSecrets(_Body):
    """A stage asks for a tenant's stored provider keys (``glxapi.secrets.get``)."""

    tenant: Token
    names: tuple[str, ...] = Field(min_length=1, max_length=16)
    stage: str = Field(pattern=r"^[a-z0-9-]{1,32}$", description="who asks (logs, metrics)")

    @field_validator("names")
    @classmethod
    def _names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not re.match(SECRET_NAME, name):
                raise ValueError(f"invalid secret name {name[:40]!r}: must match {SECRET_NAME}")
        return names


class SecretsReply(_Body):
    """``sealed``: a Fernet token (the bus secrets key) of a JSON object name -> value or
    null. The values never travel in clear, and no stream ever holds them."""

    ok: bool
    error: str = ""
    sealed: str = ""


class GetBots(_Body):
    """A discord-edge asks for the bots it runs (``glxapi.edge.bots``)."""

    edge: Token = Field(description="the edge's DISCORD_EDGE_NAME")


class Bot(_Body):
    tenant: Token
    token: str = Field(min_length=1, max_length=500)
    allowed_guild_ids: tuple[DiscordId, ...] = ()


class BotList(_Body):
    """What ``BotsReply.sealed`` opens to (the bus edge key, NATS_EDGE_KEY)."""

    bots: tuple[Bot, ...] = ()


class BotsReply(_Body):
    ok: bool
    error: str = ""
    sealed: str = Field("", description="a Fernet token (NATS_EDGE_KEY) of a BotList")


class EdgeChanged(_Body):
    """Published (core NATS, ``glxapi.edge.changed``) when an edge's bots changed: a token,
    allowed guilds, a tenant disabled or moved. The edge asks for its bots again."""

    edge: Token


# --- campaign memory (docs/adr/0007) ---------------------------------------------------------

MemoryId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.:-]{0,127}$")]
MAX_RECALL_K = 20
MAX_MEMORY_CHARS = 2000


class RecallRequest(_Body):
    """npc-brain asks for what NPC ``npc`` remembers that bears on ``text``, the line it is
    about to answer (``glxapi.memory.recall``; only npc-brain may ask). session-control
    resolves the session's campaign for the tenant and answers with at most ``k`` memories
    that NPC witnessed (``Campaign.witnesses``) or was taught, best first."""

    tenant: Token
    session: Token
    npc: Token
    text: str = Field(min_length=1, max_length=4000, description="the player's line")
    k: int = Field(5, ge=1, le=MAX_RECALL_K, description="memories at most")

    @model_validator(mode="after")
    def _storable(self) -> RecallRequest:
        return refuse_nul(self)


class RecalledMemory(_Body):
    """One memory of an NPC as recall returns it. ``text`` is written to be read by the NPC
    itself: an exchange as "<speaker> said to <npc>: "..." <npc> answered: "..."", a fact as
    the GM taught it."""

    id: MemoryId = Field(description="the memory's id in session-control's store")
    kind: Literal["exchange", "fact"]
    text: str = Field(min_length=1, max_length=MAX_MEMORY_CHARS)
    session: Token | None = Field(
        None, description="the session it comes from (none for a fact taught between sessions)")
    turn_id: MemoryId | None = Field(
        None, description="the turn of an exchange (npc-brain leaves out what its session "
        "history already holds)")
    spoken_ns: int = Field(0, ge=0, description="when it was said or taught (unix ns)")
    score: float = Field(0.0, ge=-1.0, le=1.0, allow_inf_nan=False,
                         description="0.85 * cosine similarity + 0.15 * recency")

    @model_validator(mode="after")
    def _storable(self) -> RecalledMemory:
        return refuse_nul(self)


class RecallReply(_Body):
    ok: bool
    error: str = ""
    memories: tuple[RecalledMemory, ...] = Field((), max_length=MAX_RECALL_K,
                                                 description="best first")
    took_ms: float = Field(0.0, ge=0, allow_inf_nan=False,
                           description="session-control's time for the request")
    embed_model: str = Field("", max_length=100,
                             description="the embedder that compared the line with the memories")
