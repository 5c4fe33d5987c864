"""Request/reply bodies of session-control's NATS API (``glxapi.session.*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from glyphoxa_campaign import Campaign
from glyphoxa_events.tokens import Token


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StartSession(_Body):
    tenant: Token
    session: Token | None = Field(None, description="chosen by session-control when omitted")
    campaign: Campaign
    edge: str = Field("scene", pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")


class StopSession(_Body):
    tenant: Token
    session: Token
    reason: str = Field("stopped by request", max_length=500)


class GetSession(_Body):
    tenant: Token
    session: Token


class SessionRecord(_Body):
    tenant: Token
    session: Token
    state: str
    edge: str
    campaign: str
    started_ns: int = 0
    stopped_ns: int = 0
    reason: str = ""


class ApiReply(_Body):
    ok: bool
    error: str = ""
    session: SessionRecord | None = None
