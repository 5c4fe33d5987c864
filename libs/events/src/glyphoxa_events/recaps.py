"""Recaps: after a session ends, session-control asks npc-brain to sum up what one NPC went
through (docs/adr/0007). Core-NATS request/reply on :data:`RECAP_SUBJECT`, served by the
npc-brain replicas as one queue group, never on a turn's path: a replica with a turn in
flight answers ``busy`` at once, and one whose recap a turn interrupts answers ``busy`` too;
session-control tries again later."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from glyphoxa_campaign import Campaign
from glyphoxa_events.tokens import Token

RECAP_SUBJECT = "glxrecap.make"
RECAP_QUEUE = "npc-brain"
MAX_EXCHANGES = 400
MAX_EXCHANGE_CHARS = 1000
MAX_RECAP_CHARS = 2000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecapRequest(_Body):
    tenant: Token
    session: Token
    campaign: Campaign = Field(description="the session's campaign snapshot (persona, llm)")
    npc: Token
    exchanges: tuple[str, ...] = Field(
        min_length=1, max_length=MAX_EXCHANGES,
        description="what the NPC witnessed, oldest first, one line each "
                    "('Sam to Greta: ... / Greta: ...')")
    previous: str = Field("", max_length=MAX_RECAP_CHARS,
                          description="the NPC's recap of the session before, carried over")


class RecapReply(_Body):
    ok: bool
    text: str = Field("", max_length=MAX_RECAP_CHARS)
    provider: str | None = None
    busy: bool = Field(False, description="a turn came first: ask again later")
    retryable: bool = True
    error: str | None = Field(None, max_length=500)
