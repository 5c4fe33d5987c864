"""The bus-internal API, ``glxapi.session.{start,stop,get}`` (request/reply), for edges.

It serves the same :class:`Sessions` as the HTTP API; the tenant and campaign must exist.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from glyphoxa_events.api import ApiReply, GetSession, SessionRecord, StartSession, StopSession
from glyphoxa_events.models import MAX_EVENT_BYTES
from glyphoxa_events.subjects import api_subject
from glyphoxa_session_control.errors import ControlError
from glyphoxa_session_control.lifecycle import Sessions
from glyphoxa_session_control.metrics import REQUESTS
from glyphoxa_session_control.models import Session, SessionCreate

log = logging.getLogger("glyphoxa.session_control.nats_api")


def record(session: Session) -> SessionRecord:
    return SessionRecord(tenant=session.tenant, session=session.id, state=session.state,
                         edge=session.edge, campaign=session.campaign, reason=session.reason)


class NatsApi:
    def __init__(self, nc: Client, sessions: Sessions):
        self._nc, self._sessions = nc, sessions
        self._subs: list = []

    async def start(self) -> None:
        routes: dict[str, tuple[type[BaseModel], Callable[..., Awaitable[Session]]]] = {
            "session.start": (StartSession, self._start),
            "session.stop": (StopSession, self._stop),
            "session.get": (GetSession, self._get),
        }
        for verb, (model, action) in routes.items():
            self._subs.append(await self._nc.subscribe(
                api_subject(verb), queue="session-control", cb=self._handler(verb, model, action)))

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()

    @property
    def ready(self) -> bool:
        return bool(self._subs)

    async def _start(self, req: StartSession) -> Session:
        body = SessionCreate(campaign=req.campaign, session=req.session, edge=req.edge,  # type: ignore[arg-type]
                             guild_id=req.guild_id, channel_id=req.channel_id)
        return await self._sessions.start(req.tenant, body, f"edge:{req.edge}")

    async def _stop(self, req: StopSession) -> Session:
        return await self._sessions.stop(req.tenant, req.session, req.reason, "edge")

    async def _get(self, req: GetSession) -> Session:
        return await self._sessions.get(req.tenant, req.session)

    def _handler(self, verb: str, model: type[BaseModel], action):  # type: ignore[no-untyped-def]
        async def handle(msg: Msg) -> None:
            reply = await self._serve(verb, model, action, msg.data)
            REQUESTS.labels(api="nats", verb=verb, result="ok" if reply.ok else "error").inc()
            if msg.reply:
                await msg.respond(reply.model_dump_json(exclude_none=True).encode())
        return handle

    async def _serve(self, verb: str, model: type[BaseModel], action, data: bytes) -> ApiReply:  # type: ignore[no-untyped-def]
        if len(data) > MAX_EVENT_BYTES:
            return ApiReply(ok=False, error=f"request larger than {MAX_EVENT_BYTES} bytes")
        try:
            request = model.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            log.warning("rejected %s request: %s: %s", verb, where, first["msg"])
            return ApiReply(ok=False, error=f"invalid request: {where}: {first['msg']}")
        try:
            return ApiReply(ok=True, session=record(await action(request)))
        except ControlError as exc:
            return ApiReply(ok=False, error=exc.message)
        except Exception as exc:  # noqa: BLE001
            log.exception("%s failed", verb)
            return ApiReply(ok=False, error=f"internal error: {type(exc).__name__}")
