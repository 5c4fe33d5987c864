"""Request/reply bodies of session-control's NATS API (``glxapi.session.*``).

This is the bus-internal door, used by edges (e.g. discord-edge's slash commands): the
tenant and campaign must already exist in session-control's database. People and tools
use the admin HTTP API instead.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from glyphoxa_events.tokens import Token


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StartSession(_Body):
    tenant: Token
    campaign: Token = Field(description="id of a campaign stored for the tenant")
    session: Token | None = Field(None, description="chosen by session-control when omitted")
    edge: str = Field("scene", pattern=r"^(discord|scene|sim)$")
    guild_id: str | None = Field(None, pattern=r"^[0-9]{1,20}$")
    channel_id: str | None = Field(None, pattern=r"^[0-9]{1,20}$")


class StopSession(_Body):
    tenant: Token
    session: Token
    reason: str = Field("stopped by request", min_length=1, max_length=500)


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


class ApiReply(_Body):
    ok: bool
    error: str = ""
    session: SessionRecord | None = None
