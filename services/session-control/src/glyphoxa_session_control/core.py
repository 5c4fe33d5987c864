"""Session lifecycle for the walking skeleton: start/stop sessions, publish stage claims.

The registry lives in a JetStream KV bucket, so a restarted session-control loses nothing.
(The PostgreSQL system of record is issue #3.)
"""

from __future__ import annotations

import logging
import secrets
import time

from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from glyphoxa_bus.claims import publish_claims
from glyphoxa_bus.publisher import Publisher
from glyphoxa_events.api import GetSession, SessionRecord, StartSession, StopSession
from glyphoxa_events.models import SessionStarted, SessionStopped
from glyphoxa_events.subjects import STAGES, SessionSubjects

log = logging.getLogger(__name__)
BUCKET = "glx_sessions"


class SessionError(Exception):
    """A request that cannot be served; its message is returned to the caller."""


def new_session_id() -> str:
    return time.strftime("s%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


class SessionRegistry:
    def __init__(self, nc: Client, publisher: Publisher, kv: KeyValue):
        self._nc, self._publisher, self._kv = nc, publisher, kv

    @classmethod
    async def open(cls, nc: Client, publisher: Publisher) -> SessionRegistry:
        js = nc.jetstream()
        from nats.js.api import KeyValueConfig, StorageType

        kv = await js.create_key_value(KeyValueConfig(bucket=BUCKET, storage=StorageType.FILE, history=5))
        return cls(nc, publisher, kv)

    async def get(self, req: GetSession) -> SessionRecord:
        try:
            entry = await self._kv.get(f"{req.tenant}.{req.session}")
        except KeyNotFoundError:
            raise SessionError(f"no session {req.session!r} for tenant {req.tenant!r}") from None
        return SessionRecord.model_validate_json(entry.value or b"{}")

    async def start(self, req: StartSession) -> SessionRecord:
        session = req.session or new_session_id()
        key = f"{req.tenant}.{session}"
        subjects = SessionSubjects(req.tenant, session)
        now = time.time_ns()
        record = SessionRecord(tenant=req.tenant, session=session, state="active", edge=req.edge,
                               campaign=req.campaign.name, started_ns=now)
        try:
            await self._kv.create(key, record.model_dump_json().encode())
        except Exception as exc:  # KeyWrongLastSequenceError when it already exists
            raise SessionError(f"session {session!r} already exists") from exc
        started = SessionStarted(campaign=req.campaign, edge=req.edge, started_ns=now)
        await self._publisher.publish_event(subjects.ctl("session.started"), started,
                                            f"ctl:{key}:session.started")
        await self._publisher.flush()
        await publish_claims(self._nc, req.tenant, session, list(STAGES))
        log.info("session started", extra={"tenant": req.tenant, "session": session,
                                           "campaign": req.campaign.name, "edge": req.edge})
        return record

    async def stop(self, req: StopSession) -> SessionRecord:
        record = await self.get(GetSession(tenant=req.tenant, session=req.session))
        if record.state != "active":
            return record
        now = time.time_ns()
        subjects = SessionSubjects(req.tenant, req.session)
        await self._publisher.publish_event(
            subjects.ctl("session.stopped"), SessionStopped(reason=req.reason, stopped_ns=now),
            f"ctl:{req.tenant}.{req.session}:session.stopped")
        await self._publisher.flush()
        record = record.model_copy(update={"state": "ended", "stopped_ns": now, "reason": req.reason})
        await self._kv.put(f"{req.tenant}.{req.session}", record.model_dump_json().encode())
        log.info("session stopped", extra={"tenant": req.tenant, "session": req.session,
                                           "reason": req.reason})
        return record
