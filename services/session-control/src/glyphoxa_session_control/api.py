"""The admin HTTP API (FastAPI; OpenAPI document at ``/openapi.json``, docs at ``/docs``).

Two kinds of bearer keys:
- the operator key (``SESSION_CONTROL_OPERATOR_KEY``, compared in constant time) manages
  tenants, their keys and tiers: ``/v1/tenants...``;
- a tenant's API key manages that tenant's own campaigns, NPCs, secrets and sessions: every
  other ``/v1/...`` route. The tenant comes from the key and nowhere else, so a tenant cannot
  even name another tenant's data; someone else's campaign is simply "not found".

While PostgreSQL is away every route answers 503 with the reason at once; while NATS is away
so do the routes that publish (start, stop, mute, speak).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from nats.errors import Error as NatsError
from psycopg import InterfaceError, OperationalError
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glyphoxa_bus.publisher import PublishError
from glyphoxa_campaign import Campaign, Npc
from glyphoxa_events.api import NpcInfo
from glyphoxa_events.tokens import Token
from glyphoxa_session_control import audit, memory
from glyphoxa_session_control.availability import Availability
from glyphoxa_session_control.campaigns import Campaigns, campaign_yaml
from glyphoxa_session_control.crypto import same_secret
from glyphoxa_session_control.errors import ControlError, Invalid, Unavailable
from glyphoxa_session_control.gm import GameMaster
from glyphoxa_session_control.lifecycle import Sessions
from glyphoxa_session_control.liveness import Watchdog, claim_holders, holders_by_session
from glyphoxa_session_control.metrics import REQUESTS
from glyphoxa_session_control.models import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    AuditEntry,
    CampaignSummary,
    FactCreate,
    MemoryEdit,
    MemoryId,
    MemoryRow,
    NpcLine,
    RecapEdit,
    RecapRow,
    SearchHit,
    SecretInfo,
    SecretValue,
    Session,
    SessionCreate,
    SessionStop,
    Tenant,
    TenantCreate,
    TenantPatch,
    TranscriptLine,
    TurnRow,
    Usage,
)
from glyphoxa_session_control.reports import Reports
from glyphoxa_session_control.tenants import Tenants
from glyphoxa_session_control.timeline import Timeline, Timelines

log = logging.getLogger("glyphoxa.session_control.api")

SecretName = Annotated[str, PathParam(pattern=r"^[a-z0-9][a-z0-9_]{0,63}$",
                                       description="e.g. deepgram, gemini, elevenlabs")]
SessionState = Literal["pending", "active", "ending", "ended"]


@dataclass
class Control:
    pool: AsyncConnectionPool
    tenants: Tenants
    campaigns: Campaigns
    sessions: Sessions
    gm: GameMaster
    reports: Reports
    timelines: Timelines
    watchdog: Watchdog
    availability: Availability
    operator_key: str
    max_request_bytes: int


class Unauthorized(ControlError):
    status = 401


_bearer = HTTPBearer(auto_error=False)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def _operator(request: Request, creds: Bearer) -> str:
    control: Control = request.app.state.control
    if not control.operator_key:
        raise Unavailable("tenant management is off: SESSION_CONTROL_OPERATOR_KEY is not set")
    if creds is None or not same_secret(creds.credentials, control.operator_key):
        raise Unauthorized("this route needs the operator key as a bearer token")
    return "operator"


async def _tenant(request: Request, creds: Bearer) -> str:
    control: Control = request.app.state.control
    found = await control.tenants.tenant_of_key(creds.credentials) if creds else None
    if found is None:
        raise Unauthorized("this route needs a tenant API key as a bearer token "
                           "(unknown, revoked, or the tenant is disabled)")
    return found


class _BodyLimit:
    """Counts a request body as it arrives, so that one sent without Content-Length (chunked)
    cannot pass the limit either (a Content-Length over it is refused before reading)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413)  # FastAPI passes it on while it reads a body
            return message

        await self.app(scope, counted if scope["type"] == "http" else receive, send)


async def _database_up(request: Request) -> None:
    """Every route: refused at once while PostgreSQL is away (not after the pool's timeout)."""
    request.app.state.control.availability.require_database()


async def _bus_up(request: Request) -> None:
    """Routes that publish: refused at once while NATS is away (not after an ack timeout)."""
    request.app.state.control.availability.require_bus()


Operator = Annotated[str, Depends(_operator)]
TenantId = Annotated[str, Depends(_tenant)]
NEEDS_BUS = [Depends(_bus_up)]


def create_app(control: Control) -> FastAPI:
    app = FastAPI(title="Glyphoxa session-control", version="1",
                  description=__doc__, openapi_url="/openapi.json",
                  dependencies=[Depends(_database_up)])
    app.add_middleware(_BodyLimit, limit=control.max_request_bytes)

    app.state.control = control

    @app.exception_handler(ControlError)
    async def control_error(request: Request, exc: ControlError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    def too_large() -> JSONResponse:
        return JSONResponse({"error": f"request body larger than {control.max_request_bytes} bytes"},
                            status_code=413)

    @app.exception_handler(413)  # _BodyLimit: a body without Content-Length that grew too big
    async def body_too_large(request: Request, exc: Exception) -> JSONResponse:
        return too_large()

    @app.exception_handler(pg_errors.DataError)
    async def unstorable(request: Request, exc: pg_errors.DataError) -> JSONResponse:
        # a value that slipped past the request models: the caller's input, not our fault
        return JSONResponse({"error": f"a value the database cannot store "
                                      f"({type(exc).__name__})"}, status_code=422)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PublishError)
    @app.exception_handler(NatsError)
    async def outage(request: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL or NATS went away during the request: tell the caller what and when
        away = control.availability.unavailable(exc)
        if away is None:
            log.error("request failed", exc_info=exc)
            return await internal(request, exc)
        log.warning("request failed in an outage: %s", away.message)
        return JSONResponse({"error": away.message}, status_code=away.status)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # the server logs the traceback; the caller gets no internals
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the "
                                      "session-control log"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "; ".join(problems), "problems": problems}, status_code=422)

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > control.max_request_bytes):
            return too_large()
        response = await call_next(request)
        route = request.scope.get("route")
        REQUESTS.labels(api="http", verb=getattr(route, "name", "unknown"),
                        result=str(response.status_code)).inc()
        return response

    # --- operator: tenants --------------------------------------------------------------

    @app.post("/v1/tenants", status_code=201, tags=["operator"])
    async def create_tenant(body: TenantCreate, actor: Operator) -> Tenant:
        return await control.tenants.create(body, actor)

    @app.get("/v1/tenants", tags=["operator"])
    async def list_tenants(actor: Operator) -> list[Tenant]:
        return await control.tenants.list()

    @app.get("/v1/tenants/{tenant_id}", tags=["operator"])
    async def get_tenant(tenant_id: Token, actor: Operator) -> Tenant:
        return await control.tenants.get(tenant_id)

    @app.patch("/v1/tenants/{tenant_id}", tags=["operator"])
    async def update_tenant(tenant_id: Token, body: TenantPatch, actor: Operator) -> Tenant:
        return await control.tenants.update(tenant_id, body, actor)

    @app.post("/v1/tenants/{tenant_id}/api-keys", status_code=201, tags=["operator"])
    async def create_api_key(tenant_id: Token, body: ApiKeyCreate, actor: Operator) -> ApiKeyCreated:
        return await control.tenants.create_key(tenant_id, body.label, actor)

    @app.get("/v1/tenants/{tenant_id}/api-keys", tags=["operator"])
    async def list_api_keys(tenant_id: Token, actor: Operator) -> list[ApiKey]:
        return await control.tenants.list_keys(tenant_id)

    @app.delete("/v1/tenants/{tenant_id}/api-keys/{key_id}", tags=["operator"])
    async def revoke_api_key(tenant_id: Token, key_id: str, actor: Operator) -> ApiKey:
        return await control.tenants.revoke_key(tenant_id, key_id, actor)

    @app.get("/v1/tenants/{tenant_id}/usage", tags=["operator"])
    async def tenant_usage(tenant_id: Token, actor: Operator,
                           month: Annotated[str | None, Query(description="YYYY-MM")] = None) -> Usage:
        return await control.reports.usage(tenant_id, month)

    @app.get("/v1/audit", tags=["operator"])
    async def audit_log(actor: Operator, tenant_id: Token | None = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditEntry]:
        return await audit.entries(control.pool, tenant_id, limit)

    # --- tenant: its own secrets ----------------------------------------------------------

    @app.get("/v1/me", tags=["tenant"])
    async def me(tenant_id: TenantId) -> Tenant:
        return await control.tenants.get(tenant_id)

    @app.get("/v1/usage", tags=["tenant"])
    async def usage(tenant_id: TenantId,
                    month: Annotated[str | None, Query(description="YYYY-MM")] = None) -> Usage:
        return await control.reports.usage(tenant_id, month)

    @app.get("/v1/secrets", tags=["tenant"])
    async def list_secrets(tenant_id: TenantId) -> list[SecretInfo]:
        return await control.tenants.list_secrets(tenant_id)

    @app.put("/v1/secrets/{name}", tags=["tenant"])
    async def put_secret(name: SecretName, body: SecretValue,
                         tenant_id: TenantId) -> SecretInfo:
        return await control.tenants.put_secret(tenant_id, name, body.value, f"tenant:{tenant_id}")

    @app.delete("/v1/secrets/{name}", status_code=204, tags=["tenant"])
    async def delete_secret(name: SecretName,
                            tenant_id: TenantId) -> Response:
        await control.tenants.delete_secret(tenant_id, name, f"tenant:{tenant_id}")
        return Response(status_code=204)

    _campaign_routes(app, control)
    _memory_routes(app, control)
    _session_routes(app, control)
    return app


def _campaign_routes(app: FastAPI, control: Control) -> None:
    campaigns = control.campaigns

    @app.get("/v1/campaigns", tags=["campaigns"])
    async def list_campaigns(tenant_id: TenantId) -> list[CampaignSummary]:
        return await campaigns.list(tenant_id)

    @app.post("/v1/campaigns", status_code=201, tags=["campaigns"])
    async def create_campaign(body: Campaign, tenant_id: TenantId) -> CampaignSummary:
        cid = await campaigns.create(tenant_id, body, f"tenant:{tenant_id}")
        return await _summary(tenant_id, cid)

    @app.post("/v1/campaigns/import", status_code=201, tags=["campaigns"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/yaml": {"schema": {"type": "string"}}}}})
    async def import_campaign(request: Request, tenant_id: TenantId,
                              replace: bool = False) -> CampaignSummary:
        try:
            text = (await request.body()).decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid("body: the campaign YAML is not UTF-8 text") from None
        cid = await campaigns.import_yaml(tenant_id, text, f"tenant:{tenant_id}", replace)
        return await _summary(tenant_id, cid)

    @app.get("/v1/campaigns/{campaign_id}", tags=["campaigns"])
    async def get_campaign(campaign_id: Token, tenant_id: TenantId) -> Campaign:
        return await campaigns.get(tenant_id, campaign_id)

    @app.put("/v1/campaigns/{campaign_id}", tags=["campaigns"])
    async def replace_campaign(campaign_id: Token, body: Campaign, tenant_id: TenantId) -> CampaignSummary:
        await campaigns.create(tenant_id, body, f"tenant:{tenant_id}", cid=campaign_id, replace=True)
        return await _summary(tenant_id, campaign_id)

    @app.delete("/v1/campaigns/{campaign_id}", status_code=204, tags=["campaigns"])
    async def delete_campaign(campaign_id: Token, tenant_id: TenantId) -> Response:
        await campaigns.delete(tenant_id, campaign_id, f"tenant:{tenant_id}")
        return Response(status_code=204)

    @app.get("/v1/campaigns/{campaign_id}/export", tags=["campaigns"],
             response_class=PlainTextResponse)
    async def export_campaign(campaign_id: Token, tenant_id: TenantId) -> PlainTextResponse:
        text = await campaigns.export_yaml(tenant_id, campaign_id)
        return PlainTextResponse(text, media_type="application/yaml")

    @app.get("/v1/campaigns/{campaign_id}/npcs", tags=["campaigns"])
    async def list_npcs(campaign_id: Token, tenant_id: TenantId) -> list[Npc]:
        return list((await campaigns.get(tenant_id, campaign_id)).npcs)

    @app.post("/v1/campaigns/{campaign_id}/npcs", status_code=201, tags=["campaigns"])
    async def create_npc(campaign_id: Token, body: Npc, tenant_id: TenantId) -> Npc:
        return await campaigns.put_npc(tenant_id, campaign_id, body, f"tenant:{tenant_id}",
                                       create_only=True)

    @app.get("/v1/campaigns/{campaign_id}/npcs/{npc_id}", tags=["campaigns"])
    async def get_npc(campaign_id: Token, npc_id: Token, tenant_id: TenantId) -> Npc:
        return await campaigns.npc(tenant_id, campaign_id, npc_id)

    @app.put("/v1/campaigns/{campaign_id}/npcs/{npc_id}", tags=["campaigns"])
    async def put_npc(campaign_id: Token, npc_id: Token, body: Npc, tenant_id: TenantId) -> Npc:
        return await campaigns.put_npc(tenant_id, campaign_id, body, f"tenant:{tenant_id}", npc_id=npc_id)

    @app.delete("/v1/campaigns/{campaign_id}/npcs/{npc_id}", status_code=204, tags=["campaigns"])
    async def delete_npc(campaign_id: Token, npc_id: Token, tenant_id: TenantId) -> Response:
        await campaigns.delete_npc(tenant_id, campaign_id, npc_id, f"tenant:{tenant_id}")
        return Response(status_code=204)

    async def _summary(tenant_id: str, cid: str) -> CampaignSummary:
        return next(c for c in await campaigns.list(tenant_id) if c.id == cid)


def _memory_routes(app: FastAPI, control: Control) -> None:
    """A campaign's memory (docs/memory.md): transcript search, what each NPC remembers, the
    facts the GM taught it and its recaps. Every change is in the audit log."""
    pool = control.pool

    @app.get("/v1/campaigns/{campaign_id}/search", tags=["memory"])
    async def search_campaign(
            campaign_id: Token, tenant_id: TenantId,
            q: Annotated[str, Query(min_length=1, max_length=500,
                                    description='words, "a phrase", -without, or')],
            limit: Annotated[int, Query(ge=1, le=500)] = 50,
            before: Annotated[datetime | None, Query(
                description="only lines said before this (the last hit's `at`: the next page)")] = None,
    ) -> list[SearchHit]:
        """The campaign's transcripts (every session), newest first."""
        hits = await memory.search_transcripts(pool, tenant_id, campaign_id, q, limit, before)
        return [SearchHit(**asdict(h)) for h in hits]

    @app.get("/v1/campaigns/{campaign_id}/npcs/{npc_id}/memories", tags=["memory"])
    async def list_memories(
            campaign_id: Token, npc_id: Token, tenant_id: TenantId,
            limit: Annotated[int, Query(ge=1, le=500)] = 50,
            before_id: Annotated[MemoryId | None, Query(
                description="only memories older than this id (the last one's: the next page)")] = None,
            kind: Literal["exchange", "fact"] | None = None,
    ) -> list[MemoryRow]:
        """What the NPC may recall (what it witnessed and was taught), newest first."""
        rows = await memory.list_memories(pool, tenant_id, campaign_id, npc_id, limit, before_id, kind)
        return [MemoryRow(**r) for r in rows]

    @app.patch("/v1/campaigns/{campaign_id}/memories/{memory_id}", tags=["memory"])
    async def edit_memory(campaign_id: Token, memory_id: MemoryId, body: MemoryEdit,
                          tenant_id: TenantId) -> MemoryRow:
        """Correct what NPCs remember; it is embedded again for recall."""
        return MemoryRow(**await control.gm.correct(tenant_id, campaign_id, memory_id, body.text,
                                                    f"tenant:{tenant_id}"))

    @app.delete("/v1/campaigns/{campaign_id}/memories/{memory_id}", status_code=204, tags=["memory"])
    async def delete_memory(campaign_id: Token, memory_id: MemoryId, tenant_id: TenantId) -> Response:
        await control.gm.forget(tenant_id, campaign_id, memory_id, f"tenant:{tenant_id}")
        return Response(status_code=204)

    @app.get("/v1/campaigns/{campaign_id}/npcs/{npc_id}/facts", tags=["memory"])
    async def list_facts(campaign_id: Token, npc_id: Token, tenant_id: TenantId) -> list[MemoryRow]:
        """The facts the GM taught the NPC, oldest first."""
        return [MemoryRow(**r) for r in await memory.list_facts(pool, tenant_id, campaign_id, npc_id)]

    @app.post("/v1/campaigns/{campaign_id}/npcs/{npc_id}/facts", status_code=201, tags=["memory"])
    async def teach_fact(campaign_id: Token, npc_id: Token, body: FactCreate,
                         tenant_id: TenantId) -> MemoryRow:
        """Teach the NPC a fact: in its prompt from its next turn on (live sessions of the
        campaign are told at once) and in every later session, recalled by it only."""
        return MemoryRow(**await control.gm.teach(tenant_id, campaign_id, npc_id, body.text,
                                                  f"tenant:{tenant_id}"))

    @app.delete("/v1/campaigns/{campaign_id}/npcs/{npc_id}/facts/{fact_id}", status_code=204,
                tags=["memory"])
    async def delete_fact(campaign_id: Token, npc_id: Token, fact_id: MemoryId,
                          tenant_id: TenantId) -> Response:
        await control.gm.forget(tenant_id, campaign_id, fact_id, f"tenant:{tenant_id}",
                                kind="fact", npc=npc_id)
        return Response(status_code=204)

    @app.get("/v1/campaigns/{campaign_id}/npcs/{npc_id}/recaps", tags=["memory"])
    async def list_recaps(campaign_id: Token, npc_id: Token, tenant_id: TenantId) -> list[RecapRow]:
        """The NPC's recaps, one per session it took part in, newest first."""
        return [RecapRow(**r) for r in await memory.list_recaps(pool, tenant_id, campaign_id, npc_id)]

    @app.put("/v1/campaigns/{campaign_id}/recaps/{recap_id}", tags=["memory"])
    async def edit_recap(campaign_id: Token, recap_id: MemoryId, body: RecapEdit,
                         tenant_id: TenantId) -> RecapRow:
        """The GM's own recap (stored as done; a pending one is no longer made)."""
        return RecapRow(**await memory.edit_recap(pool, tenant_id, campaign_id, recap_id, body.text,
                                                  f"tenant:{tenant_id}"))

    @app.delete("/v1/campaigns/{campaign_id}/recaps/{recap_id}", status_code=204, tags=["memory"])
    async def delete_recap(campaign_id: Token, recap_id: MemoryId, tenant_id: TenantId) -> Response:
        await memory.delete_recap(pool, tenant_id, campaign_id, recap_id, f"tenant:{tenant_id}")
        return Response(status_code=204)


def _session_routes(app: FastAPI, control: Control) -> None:
    sessions = control.sessions

    def with_holders(session: Session) -> Session:
        if session.state == "ended":
            return session
        held = holders_by_session(control.watchdog.beats).get(f"{session.tenant}.{session.id}", {})
        return session.model_copy(update={"holders": claim_holders(held)})

    @app.post("/v1/sessions", status_code=201, tags=["sessions"], dependencies=NEEDS_BUS)
    async def start_session(body: SessionCreate, tenant_id: TenantId) -> Session:
        return with_holders(await sessions.start(tenant_id, body, f"tenant:{tenant_id}"))

    @app.get("/v1/sessions", tags=["sessions"])
    async def list_sessions(tenant_id: TenantId, state: SessionState | None = None,
                            limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Session]:
        return await sessions.list(tenant_id, state, limit)

    @app.get("/v1/sessions/{session_id}", tags=["sessions"])
    async def get_session(session_id: Token, tenant_id: TenantId) -> Session:
        return with_holders(await sessions.get(tenant_id, session_id))

    @app.post("/v1/sessions/{session_id}/stop", tags=["sessions"], dependencies=NEEDS_BUS)
    async def stop_session(session_id: Token, tenant_id: TenantId, body: SessionStop | None = None) -> Session:
        reason = (body or SessionStop()).reason
        return with_holders(await sessions.stop(tenant_id, session_id, reason, f"tenant:{tenant_id}"))

    @app.get("/v1/sessions/{session_id}/npcs", tags=["sessions"])
    async def session_npcs(session_id: Token, tenant_id: TenantId) -> list[NpcInfo]:
        return await control.gm.npcs(tenant_id, session_id)

    @app.post("/v1/sessions/{session_id}/npcs/{npc}/mute", tags=["sessions"],
              dependencies=NEEDS_BUS)
    async def mute_npc(session_id: Token, npc: Token | Literal["*"], tenant_id: TenantId
                       ) -> list[NpcInfo]:
        return await control.gm.mute(tenant_id, session_id, npc, True, None, f"tenant:{tenant_id}")

    @app.post("/v1/sessions/{session_id}/npcs/{npc}/unmute", tags=["sessions"],
              dependencies=NEEDS_BUS)
    async def unmute_npc(session_id: Token, npc: Token | Literal["*"], tenant_id: TenantId
                         ) -> list[NpcInfo]:
        return await control.gm.mute(tenant_id, session_id, npc, False, None,
                                     f"tenant:{tenant_id}")

    @app.post("/v1/sessions/{session_id}/npcs/{npc}/speak", status_code=202, tags=["sessions"],
              dependencies=NEEDS_BUS)
    async def speak_npc(session_id: Token, npc: Token, body: NpcLine, tenant_id: TenantId
                        ) -> Session:
        return with_holders(await control.gm.speak(tenant_id, session_id, npc, body.text, None,
                                                   f"tenant:{tenant_id}"))

    @app.get("/v1/sessions/{session_id}/transcript", tags=["sessions"])
    async def transcript(session_id: Token, tenant_id: TenantId) -> list[TranscriptLine]:
        return await control.reports.transcript(tenant_id, session_id)

    @app.get("/v1/sessions/{session_id}/turns", tags=["sessions"])
    async def turns(session_id: Token, tenant_id: TenantId) -> list[TurnRow]:
        return await control.reports.turns(tenant_id, session_id)

    @app.get("/v1/sessions/{session_id}/timeline", tags=["sessions"])
    async def timeline(session_id: Token, tenant_id: TenantId) -> Timeline:
        """Every turn on one time axis (speech, vad end, stt final, routing, first token,
        first sentence, first audio published and played, cancellations and failures) with
        the session's barge-ins and flushes; from the streams while they keep the session."""
        return await control.timelines.of(tenant_id, session_id)

    @app.get("/v1/sessions/{session_id}/campaign", tags=["sessions"],
             response_class=PlainTextResponse)
    async def session_campaign(session_id: Token, tenant_id: TenantId) -> PlainTextResponse:
        """The campaign as the session was started with it (its snapshot), as YAML."""
        campaign = await sessions.campaign_of(tenant_id, session_id)
        return PlainTextResponse(campaign_yaml(campaign), media_type="application/yaml")
