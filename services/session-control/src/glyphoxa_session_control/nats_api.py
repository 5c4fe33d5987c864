"""The bus-internal API (core-NATS request/reply, never a stream).

``glxapi.session.{start,stop,get,find}`` and ``glxapi.npc.{list,mute,speak}`` are the door
for edges (discord-edge's slash commands); they serve the same :class:`Sessions` as the
HTTP API, and the tenant and campaign must exist. A request that names its ``caller`` is
checked the way :mod:`glyphoxa_session_control.gm` says (guild, GM role).
``glxapi.secrets.get`` hands a tenant's stored provider keys to the stages, sealed with
the bus secrets key (see ``glyphoxa_runtime.tenant_keys``); without that key it refuses.
While PostgreSQL is away every verb is refused at once with the reason.

A request's subject ends in its principal, the NATS user that published it
(``glxapi.<verb>.<principal>``); nats-server lets each user publish only under its own name
(docs/adr/0006), so :func:`authorize` decides from it what the requester may do, and a
``caller`` in the body narrows that to one Discord member but never widens it. Without NATS
authorization (session-control logged in as nobody) the principal proves nothing and every
request is served as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from glyphoxa_bus import auth
from glyphoxa_bus.auth import OPERATOR, TENANT_EDGE_PREFIX, tenant_edge_key
from glyphoxa_bus.counted import worth_logging
from glyphoxa_events.api import (
    ApiReply,
    Bot,
    BotList,
    BotsReply,
    Caller,
    FindSession,
    GetBots,
    GetSecrets,
    GetSession,
    ListNpcs,
    MuteNpc,
    NpcsReply,
    RecallReply,
    RecallRequest,
    SearchCampaign,
    SearchHitInfo,
    SearchReply,
    SecretsReply,
    SessionRecord,
    SpeakNpc,
    StartSession,
    StopSession,
    TaughtReply,
    TeachNpc,
)
from glyphoxa_events.models import MAX_EVENT_BYTES
from glyphoxa_events.subjects import ANONYMOUS, STAGES, api_principal, api_subject
from glyphoxa_events.tokens import InvalidToken
from glyphoxa_runtime.tenant_keys import seal, sealer
from glyphoxa_session_control.availability import Availability
from glyphoxa_session_control.campaigns import Campaigns
from glyphoxa_session_control.errors import ControlError, Forbidden, Invalid, NotFound
from glyphoxa_session_control.gm import GameMaster, gm_only
from glyphoxa_session_control.lifecycle import Sessions
from glyphoxa_session_control.metrics import REQUESTS
from glyphoxa_session_control.models import Session, SessionCreate
from glyphoxa_session_control.recall import RecallService
from glyphoxa_session_control.tenants import Tenants

Reply = ApiReply | SecretsReply | NpcsReply | BotsReply | RecallReply | TaughtReply | SearchReply

STAGE_VERBS = {stage: frozenset(verbs) for stage, verbs in auth.STAGE_VERBS.items()}
EDGE_VERBS = frozenset(auth.EDGE_VERBS)
TRUSTED = frozenset({OPERATOR, "session-control"})


def authorize(principal: str, verb: str, tenant: str | None, trust_anonymous: bool) -> None:
    """Whether ``principal`` may ``verb`` for ``tenant`` (None: a verb without one); raises
    :class:`Forbidden` saying why not. Stages may only fetch tenants' keys (and npc-brain
    recall NPCs' memories); the shared
    discord-edge may use the edge verbs for any tenant (session-control assigns tenants to
    edges); a tenant's own edge (``edge-<tenant>``) only for its tenant; the operator's
    tools and session-control itself, anything."""
    if principal in TRUSTED or (principal == ANONYMOUS and trust_anonymous):
        return
    if principal in STAGES and verb in STAGE_VERBS[principal]:
        return
    if principal == "discord-edge" and verb in EDGE_VERBS:
        return
    own = principal.removeprefix(TENANT_EDGE_PREFIX) if principal.startswith(
        TENANT_EDGE_PREFIX) else None
    if own is not None and verb in EDGE_VERBS and tenant in (own, None):
        return
    whom = f" for tenant {tenant!r}" if tenant else ""
    raise Forbidden(f"{principal!r} may not use {verb}{whom}")

log = logging.getLogger("glyphoxa.session_control.nats_api")


def record(session: Session) -> SessionRecord:
    return SessionRecord(tenant=session.tenant, session=session.id, state=session.state,
                         edge=session.edge, campaign=session.campaign, reason=session.reason,
                         guild_id=session.guild_id, channel_id=session.channel_id)


class NatsApi:
    def __init__(self, nc: Client, sessions: Sessions, tenants: Tenants, gm: GameMaster,
                 campaigns: Campaigns, availability: Availability, secrets_key: str = "",
                 edge_key: str = "", trust_anonymous: bool = True,
                 recall: RecallService | None = None):
        self._nc, self._sessions, self._tenants = nc, sessions, tenants
        self._recall = recall
        self._trust_anonymous = trust_anonymous
        self._refused = 0
        self._availability = availability
        self._gm, self._campaigns = gm, campaigns
        self._sealer = sealer(secrets_key) if secrets_key else None
        self._edge_key = edge_key
        self._edge_sealer = sealer(edge_key) if edge_key else None
        self._subs: list = []

    async def start(self) -> None:
        # verb: (request, reply, action); a refusal is the verb's own reply type with ok=False
        routes: dict[str, tuple[type[BaseModel], type[Reply], Callable[..., Awaitable[Reply]]]] = {
            "session.start": (StartSession, ApiReply, self._start),
            "session.stop": (StopSession, ApiReply, self._stop),
            "session.get": (GetSession, ApiReply, self._get),
            "session.find": (FindSession, ApiReply, self._find),
            "npc.list": (ListNpcs, NpcsReply, self._npcs),
            "npc.mute": (MuteNpc, NpcsReply, self._mute),
            "npc.speak": (SpeakNpc, ApiReply, self._speak),
            "npc.teach": (TeachNpc, TaughtReply, self._teach),
            "campaign.search": (SearchCampaign, SearchReply, self._search),
            "secrets.get": (GetSecrets, SecretsReply, self._secrets),
            "edge.bots": (GetBots, BotsReply, self._bots),
            "memory.recall": (RecallRequest, RecallReply, self._recall_memories),
        }
        for verb, (model, reply, action) in routes.items():
            self._subs.append(await self._nc.subscribe(
                api_subject(verb, "*"), queue="session-control",
                cb=self._handler(verb, model, reply, action)))

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()

    @property
    def ready(self) -> bool:
        return bool(self._subs)

    async def _start(self, req: StartSession) -> ApiReply:
        if req.campaign is None:
            req = req.model_copy(update={"campaign": await self._only_campaign(req.tenant)})
        assert req.campaign is not None
        if req.caller is not None:
            await self._gm.check_guild(req.tenant, req.caller)
            if req.guild_id != req.caller.guild_id:
                raise ControlError("the session's guild is not the caller's")
            gm_only(req.caller, await self._campaigns.get(req.tenant, req.campaign),
                    "start a session")
        body = SessionCreate(campaign=req.campaign, session=req.session, edge=req.edge,  # type: ignore[arg-type]
                             guild_id=req.guild_id, channel_id=req.channel_id)
        return _ok(await self._sessions.start(req.tenant, body, _actor(req.edge, req.caller)))

    async def _only_campaign(self, tenant: str) -> str:
        await self._tenants.get(tenant)  # an unknown tenant says so
        stored = [c.id for c in await self._campaigns.list(tenant)]
        if len(stored) == 1:
            return stored[0]
        if not stored:
            raise NotFound(f"tenant {tenant!r} has no campaign yet: import one first")
        raise Invalid(f"tenant {tenant!r} has {len(stored)} campaigns ({', '.join(stored)}): "
                      "name the one to play")

    async def _stop(self, req: StopSession) -> ApiReply:
        session = await self._sessions.get(req.tenant, req.session)
        await self._gm.check(req.tenant, session, req.caller, "stop the session")
        return _ok(await self._sessions.stop(req.tenant, req.session, req.reason,
                                             _actor("edge", req.caller)))

    async def _find(self, req: FindSession) -> ApiReply:
        return _ok(await self._gm.find(req.tenant, req.guild_id))

    async def _npcs(self, req: ListNpcs) -> NpcsReply:
        return NpcsReply(ok=True, npcs=tuple(await self._gm.npcs(req.tenant, req.session)))

    async def _mute(self, req: MuteNpc) -> NpcsReply:
        npcs = await self._gm.mute(req.tenant, req.session, req.npc, req.muted, req.caller,
                                   _actor("edge", req.caller))
        return NpcsReply(ok=True, npcs=tuple(npcs))

    async def _speak(self, req: SpeakNpc) -> ApiReply:
        return _ok(await self._gm.speak(req.tenant, req.session, req.npc, req.text, req.caller,
                                        _actor("edge", req.caller)))

    async def _recall_memories(self, req: RecallRequest) -> RecallReply:
        if self._recall is None:
            return RecallReply(ok=False, error="campaign memory is off in this session-control")
        return await self._recall.recall(req)

    async def _teach(self, req: TeachNpc) -> TaughtReply:
        fact = await self._gm.teach_in_session(req.tenant, req.session, req.npc, req.text,
                                               req.caller, _actor("edge", req.caller))
        return TaughtReply(ok=True, fact_id=str(fact["id"]))

    async def _search(self, req: SearchCampaign) -> SearchReply:
        hits = await self._gm.search(req.tenant, req.session, req.q, req.caller, req.limit)
        return SearchReply(ok=True, hits=tuple(
            SearchHitInfo(session=h.session, role=h.role, speaker=h.speaker[:64],  # type: ignore[arg-type]
                          npc=h.npc, text=h.text[:4000], spoken_ns=h.spoken_ns) for h in hits))

    async def _get(self, req: GetSession) -> ApiReply:
        return _ok(await self._sessions.get(req.tenant, req.session))

    async def _secrets(self, req: GetSecrets) -> SecretsReply:
        if self._sealer is None:
            return SecretsReply(ok=False, error="secret delivery is off: set NATS_SECRETS_KEY "
                                                "for session-control and the stages")
        tenant = await self._tenants.get(req.tenant)
        if tenant.disabled:
            raise NotFound(f"tenant {req.tenant!r} is disabled")
        values = {name: await self._tenants.secret(req.tenant, name) for name in req.names}
        log.info("tenant keys delivered", extra={
            "tenant": req.tenant, "stage": req.stage,
            "stored": sorted(name for name, value in values.items() if value)})
        return SecretsReply(ok=True, sealed=seal(self._sealer, values))

    async def _bots(self, req: GetBots, principal: str = ANONYMOUS) -> BotsReply:
        if self._edge_sealer is None:
            return BotsReply(ok=False, error="bot delivery is off: set NATS_EDGE_KEY for "
                                             "session-control and discord-edge")
        own = (principal.removeprefix(TENANT_EDGE_PREFIX)
               if principal.startswith(TENANT_EDGE_PREFIX) else None)
        bots = [Bot(tenant=t, token=token, allowed_guild_ids=tuple(guilds))
                for t, token, guilds in await self._tenants.bots(req.edge)
                if own is None or t == own]  # a tenant's own edge gets its tenant's bot only
        log.info("bots delivered", extra={"edge": req.edge, "tenants": [b.tenant for b in bots]})
        # a tenant's own edge holds only its derived key (glyphoxa_bus.auth.tenant_edge_key)
        edge_sealer = (self._edge_sealer if own is None
                       else sealer(tenant_edge_key(self._edge_key, principal)))
        sealed = edge_sealer.encrypt(BotList(bots=tuple(bots)).model_dump_json().encode())
        return BotsReply(ok=True, sealed=sealed.decode())

    def _handler(self, verb: str, model: type[BaseModel], failed: type[Reply], action):  # type: ignore[no-untyped-def]
        async def handle(msg: Msg) -> None:
            reply = await self._serve(verb, model, failed, action, msg.data, msg.subject)
            REQUESTS.labels(api="nats", verb=verb, result="ok" if reply.ok else "error").inc()
            if msg.reply:
                await msg.respond(reply.model_dump_json(exclude_none=True).encode())
        return handle

    async def _serve(self, verb: str, model: type[BaseModel], failed: type[Reply], action,  # type: ignore[no-untyped-def]
                     data: bytes, subject: str) -> Reply:
        if len(data) > MAX_EVENT_BYTES:
            return failed(ok=False, error=f"request larger than {MAX_EVENT_BYTES} bytes")
        try:
            principal = api_principal(subject)
            request = model.model_validate_json(data, strict=True)
        except InvalidToken as exc:
            return failed(ok=False, error=f"invalid request subject: {exc}")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            log.warning("rejected %s request: %s: %s", verb, where, first["msg"])
            return failed(ok=False, error=f"invalid request: {where}: {first['msg']}")
        try:
            authorize(principal, verb, getattr(request, "tenant", None), self._trust_anonymous)
        except Forbidden as exc:
            self._refused += 1
            if worth_logging(self._refused):
                log.warning("refused %s request: %s", verb, exc.message,
                            extra={"principal": principal, "refused": self._refused})
            return failed(ok=False, error=exc.message)
        try:
            self._availability.require_database()
            if verb == "edge.bots":
                return await self._bots(request, principal)  # type: ignore[arg-type]
            return await action(request)
        except ControlError as exc:
            return failed(ok=False, error=exc.message)
        except Exception as exc:  # noqa: BLE001
            if (away := self._availability.unavailable(exc)) is not None:
                log.warning("%s failed in an outage: %s", verb, away.message)
                return failed(ok=False, error=away.message)
            log.exception("%s failed", verb)
            return failed(ok=False, error=f"internal error: {type(exc).__name__}")


def _actor(edge: str, caller: Caller | None) -> str:
    """Who did it, for the audit log: the edge, and the Discord member when one asked."""
    return f"edge:{edge}" + (f":discord:{caller.user_id}" if caller is not None else "")


def _ok(session: Session) -> ApiReply:
    return ApiReply(ok=True, session=record(session))
