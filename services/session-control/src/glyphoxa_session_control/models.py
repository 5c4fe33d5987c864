"""The admin API's request and response bodies (also the OpenAPI document's schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from glyphoxa_campaign import Campaign
from glyphoxa_campaign.text import refuse_nul
from glyphoxa_events.models import RoutingExplained, TurnFailure
from glyphoxa_events.tokens import Token

GuildId = Annotated[str, Field(pattern=r"^[0-9]{1,20}$", description="a Discord snowflake")]


class _In(BaseModel):
    """A request body: unknown fields and NUL characters (which PostgreSQL cannot store) are
    refused with a 422 naming the field."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _storable(self) -> _In:
        return refuse_nul(self)


class Tier(_In):
    max_concurrent_sessions: int = Field(1, ge=0, le=10_000)
    monthly_session_hours: float = Field(20.0, ge=0, le=1_000_000)


class TenantCreate(_In):
    id: Token
    name: str = Field(min_length=1, max_length=200)
    tier: Tier = Tier()
    allowed_guild_ids: list[GuildId] = Field(default_factory=list, max_length=1000)
    bot_token: str | None = Field(None, min_length=1, max_length=500,
                                  description="Discord bot token; write-only, stored encrypted")
    discord_edge: Token = Field("default", description="the discord-edge (DISCORD_EDGE_NAME) "
                                                       "that runs the tenant's bot")


class TenantPatch(_In):
    name: str | None = Field(None, min_length=1, max_length=200)
    tier: Tier | None = None
    allowed_guild_ids: list[GuildId] | None = Field(None, max_length=1000)
    bot_token: str | None = Field(None, min_length=1, max_length=500,
                                  description="write-only, stored encrypted")
    discord_edge: Token | None = None
    disabled: bool | None = None


class Tenant(BaseModel):
    id: str
    name: str
    tier: Tier
    allowed_guild_ids: list[str]
    bot_token_set: bool
    discord_edge: str = "default"
    disabled: bool
    created_at: datetime
    updated_at: datetime


class ApiKeyCreate(_In):
    label: str = Field("", max_length=200)


class ApiKey(BaseModel):
    id: str
    label: str
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKey):
    key: str = Field(description="shown once; only its hash is stored")


class SecretValue(_In):
    value: str = Field(min_length=1, max_length=4000, description="write-only, stored encrypted")


class SecretInfo(BaseModel):
    name: str
    updated_at: datetime


class CampaignSummary(BaseModel):
    id: str
    name: str
    npcs: list[str]
    updated_at: datetime


class SessionCreate(_In):
    campaign: Token
    session: Token | None = Field(None, description="chosen by session-control when omitted")
    edge: Literal["discord", "scene", "sim"] = "scene"
    guild_id: str | None = Field(None, pattern=r"^[0-9]{1,20}$", description="Discord guild (edge discord)")
    channel_id: str | None = Field(None, pattern=r"^[0-9]{1,20}$", description="Discord voice channel")
    replay_of: Token | None = Field(None, description=(
        "a session of the same tenant to replay: the new session starts with that session's "
        "campaign snapshot instead of the stored campaign (``glyphoxa session replay``). A "
        "replay is a debugging run: its turns are recorded, but never become campaign memory"))
    campaign_snapshot: Campaign | None = Field(None, description=(
        "with replay_of only: the campaign to replay with instead of the original's snapshot "
        "(to try a persona or alias change); it is not stored among the tenant's campaigns"))

    @model_validator(mode="after")
    def _snapshot_replays(self) -> SessionCreate:
        if self.campaign_snapshot is not None and self.replay_of is None:
            raise ValueError("campaign_snapshot is for a replay: give replay_of too")
        return self


class SessionStop(_In):
    reason: str = Field("stopped by the game master", min_length=1, max_length=500)


class NpcLine(_In):
    text: str = Field(min_length=1, max_length=1000, description="what the NPC says, as is")


class Transition(BaseModel):
    from_state: str | None
    to_state: str
    reason: str
    at: datetime


class ClaimHolder(BaseModel):
    role: str
    replica: str | None = Field(description="the replica holding the claim, none while it is free")
    last_heartbeat: datetime | None = None


class Session(BaseModel):
    tenant: str
    id: str
    campaign: str
    edge: str
    guild_id: str | None = None
    channel_id: str | None = None
    state: Literal["pending", "active", "ending", "ended"]
    reason: str
    created_at: datetime
    started_at: datetime | None = None
    ending_at: datetime | None = None
    ended_at: datetime | None = None
    transitions: list[Transition] = Field(default_factory=list)
    holders: list[ClaimHolder] = Field(default_factory=list)


class TranscriptLine(BaseModel):
    turn_id: str
    role: Literal["player", "npc"]
    speaker: str
    text: str
    complete: bool
    spoken_ns: int
    npc: str | None = Field(None, description="a player's line: the NPC it was addressed to")
    outcome: str | None = Field(None, description="a player's line: how its turn ended")
    routing: RoutingExplained | None = Field(
        None, description="a player's line: why it went to that NPC or to nobody")


class TurnRow(BaseModel):
    turn_id: str
    speaker: str
    npc: str | None
    outcome: str
    reason: str
    transcript: str
    latency: dict[str, int | float | None]
    speech_end_ns: int
    llm_provider: str | None = Field(None, description="the LLM provider that spoke the reply")
    routing: RoutingExplained | None = Field(
        None, description="why the turn went to its NPC or to nobody (absent for old turns)")
    failure: TurnFailure | None = Field(
        None, description="a failed, timed-out or cancelled turn: the stage, provider and error")
    memories: list[str] = Field(
        default_factory=list, description="the memories of earlier sessions recalled into the "
        "reply's prompt (ids: GET /v1/campaigns/{id}/npcs/{npc}/memories)")


class Usage(BaseModel):
    tenant: str
    month: str = Field(description="YYYY-MM (UTC)")
    session_seconds: float
    stt_audio_seconds: float
    llm_tokens_in: int
    llm_tokens_out: int
    tts_characters: int
    monthly_session_hours: float
    sessions_live: int


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    tenant_id: str | None
    action: str
    target: str
    details: dict[str, object]


# --- campaign memory (docs/memory.md, docs/adr/0007) ------------------------------------------

MemoryId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class MemoryRow(BaseModel):
    id: int
    kind: Literal["exchange", "fact"]
    session: str | None = Field(description="the session it was said in (a fact: none)")
    turn_id: str | None
    speaker: str | None = Field(description="who spoke to the NPC (a line the GM had the NPC say: none)")
    npc: str = Field(description="the NPC it was said to (a fact: the NPC it was taught)")
    present: list[str] = Field(description="the NPCs in that NPC's scene")
    witnesses: list[str] = Field(description="the NPCs that may recall it")
    text: str
    spoken_at: datetime
    created_at: datetime
    embedded: bool = Field(description="embedded for recall (an edited memory is embedded again)")
    embed_model: str | None
    taught_by: str | None
    edited_by: str | None
    edited_at: datetime | None


class MemoryEdit(_In):
    text: str = Field(min_length=1, max_length=10_000, pattern=r"\S",
                      description="what the NPC remembers from now on (embedded again)")


class FactCreate(_In):
    text: str = Field(min_length=1, max_length=300, pattern=r"\S",
                      description="a fact only this NPC knows from now on")


class RecapRow(BaseModel):
    id: int
    session: str
    npc: str
    status: Literal["pending", "done", "failed"]
    text: str
    error: str | None
    attempts: int
    model: str | None
    created_at: datetime
    updated_at: datetime
    edited_by: str | None
    edited_at: datetime | None


class RecapEdit(_In):
    text: str = Field(min_length=1, max_length=1500, pattern=r"\S",
                      description="the recap as the GM wants it (stored as done)")


class SearchHit(BaseModel):
    session: str
    turn_id: str
    role: Literal["player", "npc"]
    speaker: str
    text: str
    complete: bool
    spoken_ns: int
    at: datetime = Field(description="when it was said; pass the last hit's as `before` for more")
    npc: str | None = Field(None, description="a player's line: the NPC it was addressed to")
