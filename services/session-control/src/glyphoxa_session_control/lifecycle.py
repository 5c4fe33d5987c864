"""Session lifecycle: pending -> active -> ending -> ended, every transition recorded with
its reason. Starting checks the tenant's tier (concurrent sessions, monthly hours), snapshots
the campaign, publishes ``ctl.session.started`` and the stage claims; stopping publishes
``ctl.session.stopped``; a session is ended once no stage or edge holds it any more.

Every step is idempotent so that a restarted session-control can finish what a killed one
began (:meth:`Sessions.reconcile`).
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime

from nats.aio.client import Client
from nats.js.errors import NotFoundError
from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from glyphoxa_bus.publisher import Publisher
from glyphoxa_bus.streams import CONTROL, WORK
from glyphoxa_campaign import Campaign
from glyphoxa_events.models import (
    MAX_EVENT_BYTES,
    MAX_FACT_CHARS,
    MAX_SEED_FACTS,
    MAX_SEED_RECAP_CHARS,
    SessionMemorySeed,
    SessionStarted,
    SessionStopped,
)
from glyphoxa_events.subjects import STAGES, SessionSubjects, claim_subject
from glyphoxa_session_control import audit, memory
from glyphoxa_session_control.campaigns import Campaigns
from glyphoxa_session_control.errors import (
    Conflict,
    Forbidden,
    Invalid,
    LimitReached,
    NotFound,
    Unavailable,
)
from glyphoxa_session_control.models import Session, SessionCreate, Transition
from glyphoxa_session_control.registry import LiveRegistry

log = logging.getLogger("glyphoxa.session_control")

LIVE = ("pending", "active", "ending")
_COLUMNS = ("tenant_id AS tenant, id, campaign_id AS campaign, edge, guild_id, channel_id, state,"
            " reason, created_at, started_at, ending_at, ended_at")
_STAMP = {"active": "started_at", "ending": "ending_at", "ended": "ended_at"}


def new_session_id() -> str:
    return time.strftime("s%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


def month_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class Sessions:
    def __init__(self, pool: AsyncConnectionPool, nc: Client, publisher: Publisher,
                 campaigns: Campaigns, registry: LiveRegistry):
        self._pool, self._nc, self._publisher = pool, nc, publisher
        self._js = nc.jetstream()
        self._campaigns, self._registry = campaigns, registry

    # reading

    async def get(self, tenant: str, sid: str) -> Session:
        async with self._pool.connection() as conn:
            row = await self._row(conn, tenant, sid)
            cur = await conn.execute(
                "SELECT from_state::text, to_state::text, reason, at FROM session_transitions"
                " WHERE tenant_id = %s AND session_id = %s ORDER BY id", (tenant, sid))
            transitions = [Transition(**r) for r in await cur.fetchall()]
        return Session(**row, transitions=transitions)

    async def list(self, tenant: str, state: str | None = None, limit: int = 100) -> list[Session]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE tenant_id = %(t)s"
                " AND (%(s)s::text IS NULL OR state::text = %(s)s)"
                " ORDER BY created_at DESC LIMIT %(n)s", {"t": tenant, "s": state, "n": limit})
            return [Session(**r) for r in await cur.fetchall()]

    async def live(self) -> list[Session]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(f"SELECT {_COLUMNS} FROM sessions WHERE state <> 'ended'")
            return [Session(**r) for r in await cur.fetchall()]

    async def state_of(self, tenant: str, sid: str) -> str | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT state::text FROM sessions WHERE tenant_id = %s AND id = %s",
                                     (tenant, sid))
            row = await cur.fetchone()
        return row["state"] if row else None

    async def campaign_of(self, tenant: str, sid: str) -> Campaign:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT campaign FROM sessions WHERE tenant_id = %s AND id = %s",
                                     (tenant, sid))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no session {sid!r}")
        return Campaign.model_validate(row["campaign"])

    # starting

    async def start(self, tenant: str, body: SessionCreate, actor: str) -> Session:
        sid = body.session or new_session_id()
        async with self._pool.connection() as conn, conn.transaction():
            if body.session and await self._exists(conn, tenant, sid):
                raise Conflict(f"session {sid!r} already exists")
            limits = await self._lock_tenant(conn, tenant, body)
            if body.replay_of:  # the campaign exactly as the replayed session had it
                campaign = await self.campaign_of(tenant, body.replay_of)
                if body.campaign_snapshot is not None:  # or as the GM wants to try it
                    self._campaigns.refuse_fakes(body.campaign_snapshot)
                    campaign = body.campaign_snapshot
            else:
                campaign = await self._campaigns.get(tenant, body.campaign)
            await self._check_limits(conn, tenant, limits)
            try:
                await conn.execute(
                    "INSERT INTO sessions (tenant_id, id, campaign_id, campaign, edge, guild_id,"
                    " channel_id, replay_of) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (tenant, sid, body.campaign, Jsonb(campaign.model_dump(mode="json")), body.edge,
                     body.guild_id, body.channel_id, body.replay_of))
            except UniqueViolation:
                raise Conflict(f"session {sid!r} already exists") from None
            await self._record(conn, tenant, sid, None, "pending", f"requested by {actor}")
            await audit.record(conn, actor, tenant, "session.start", sid, campaign=body.campaign,
                               edge=body.edge, guild_id=body.guild_id, channel_id=body.channel_id,
                               **({"replay_of": body.replay_of} if body.replay_of else {}),
                               **({"campaign_changed": True} if body.campaign_snapshot else {}))
        await self._registry.put(tenant, sid, "pending", body.edge, body.campaign)
        try:
            await self._announce(tenant, sid, campaign, body.edge, body.campaign)
        except Exception as exc:
            log.exception("session start failed", extra={"tenant": tenant, "session": sid})
            await self.transition(tenant, sid, LIVE, "ended", f"start failed: {type(exc).__name__}")
            raise Unavailable("the session could not be started: the bus did not accept it; "
                              "try again") from exc
        await self.transition(tenant, sid, ("pending",), "active", "stage claims published")
        log.info("session started", extra={"tenant": tenant, "session": sid,
                                           "campaign": body.campaign, "edge": body.edge})
        return await self.get(tenant, sid)

    @staticmethod
    async def _lock_tenant(conn: AsyncConnection, tenant: str, body: SessionCreate) -> dict:
        cur = await conn.execute(
            "SELECT max_concurrent_sessions, monthly_session_hours, allowed_guild_ids, disabled"
            " FROM tenants WHERE id = %s FOR UPDATE", (tenant,))  # one start per tenant at a time
        t = await cur.fetchone()
        if t is None:
            raise NotFound(f"no tenant {tenant!r}")
        if t["disabled"]:
            raise Forbidden(f"tenant {tenant!r} is disabled")
        if body.edge == "discord":
            if not body.guild_id or not body.channel_id:
                raise Invalid("a discord session needs guild_id and channel_id")
            if body.guild_id not in t["allowed_guild_ids"]:
                raise Forbidden(f"guild {body.guild_id} is not among tenant {tenant!r}'s allowed guilds")
        return t

    async def _check_limits(self, conn: AsyncConnection, tenant: str, t: dict) -> None:
        cur = await conn.execute(
            "SELECT count(*) AS n, count(*) FILTER (WHERE state = 'ending') AS ending"
            " FROM sessions WHERE tenant_id = %s AND state <> 'ended'", (tenant,))
        row = await cur.fetchone()
        live, ending, limit = row["n"], row["ending"], t["max_concurrent_sessions"]
        if live >= limit:
            what = (f"{ending} of them still ending (its stages are finishing): try again in a "
                    "few seconds" if ending else "stop one first")
            raise LimitReached(f"tenant {tenant!r} already has {live} live session(s); its tier "
                               f"allows {limit} at a time: {what}")
        used = await self.session_seconds(conn, tenant)
        quota = float(t["monthly_session_hours"]) * 3600
        if used >= quota:
            raise LimitReached(
                f"tenant {tenant!r} has used its {float(t['monthly_session_hours']):g} session hours "
                f"for {month_start():%Y-%m} ({used / 3600:.2f} h): no new sessions until next month")

    async def session_seconds(self, conn: AsyncConnection, tenant: str) -> float:
        """Session time this month: ended sessions' usage plus the time live ones have run."""
        cur = await conn.execute(
            "SELECT coalesce(sum(amount), 0) AS ended FROM usage_events WHERE tenant_id = %s"
            " AND metric = 'session_seconds' AND at >= %s", (tenant, month_start()))
        ended = (await cur.fetchone())["ended"]
        cur = await conn.execute(
            "SELECT coalesce(sum(extract(epoch FROM coalesce(ending_at, now())"
            " - greatest(started_at, %s))), 0)::float8 AS live FROM sessions"
            " WHERE tenant_id = %s AND state IN ('active', 'ending') AND started_at IS NOT NULL",
            (month_start(), tenant))
        return float(ended) + float((await cur.fetchone())["live"])

    async def _announce(self, tenant: str, sid: str, campaign: Campaign, edge: str,
                        campaign_id: str) -> None:
        subjects = SessionSubjects(tenant, sid)
        recaps, facts = await memory.session_seed(self._pool, tenant, campaign_id)
        started = fit_seed(SessionStarted(campaign=campaign, edge=edge, started_ns=time.time_ns()),
                           recaps, facts)
        await self._publisher.publish_event(subjects.ctl("session.started"), started,
                                            f"ctl:{tenant}.{sid}:session.started")
        await self._publisher.flush()
        await self.publish_missing_claims(tenant, sid)

    async def publish_missing_claims(self, tenant: str, sid: str) -> list[str]:
        """Publish the claims of the session that are not in the work stream (neither waiting
        nor held); a claim that exists is never published twice."""
        published = []
        for stage in STAGES:
            subject = claim_subject(stage, tenant, sid)
            try:
                await self._js.get_last_msg(WORK, subject)
                continue
            except NotFoundError:
                pass
            await self._js.publish(subject, b"", headers={"Nats-Msg-Id": f"claim:{subject}"})
            published.append(stage)
        return published

    # stopping

    async def stop(self, tenant: str, sid: str, reason: str, actor: str) -> Session:
        session = await self.get(tenant, sid)
        if session.state in ("ending", "ended"):
            return session
        async with self._pool.connection() as conn:
            await audit.record(conn, actor, tenant, "session.stop", sid, reason=reason)
        await self.end(tenant, sid, reason)
        return await self.get(tenant, sid)

    async def end(self, tenant: str, sid: str, reason: str) -> None:
        """active/pending -> ending: the stages are told to finish and release their claims."""
        await self.announce_end(tenant, sid, reason)
        await self.record_end(tenant, sid, reason)

    async def announce_end(self, tenant: str, sid: str, reason: str) -> None:
        """Tell the stages and the edge that the session ends (once: a fixed message id)."""
        await self.tell_stopped(tenant, sid, reason, f"ctl:{tenant}.{sid}:session.stopped")

    async def record_end(self, tenant: str, sid: str, reason: str) -> None:
        await self.transition(tenant, sid, ("pending", "active"), "ending", reason)
        log.info("session ending", extra={"tenant": tenant, "session": sid, "reason": reason})

    async def tell_stopped(self, tenant: str, sid: str, reason: str, msg_id: str | None = None) -> None:
        subjects = SessionSubjects(tenant, sid)
        event = SessionStopped(reason=reason[:500], stopped_ns=time.time_ns())
        await self._publisher.publish_event(
            subjects.ctl("session.stopped"), event,
            msg_id or f"ctl:{tenant}.{sid}:session.stopped:{event.stopped_ns}")
        await self._publisher.flush()

    async def finish(self, tenant: str, sid: str, reason: str) -> None:
        """ending -> ended, and the session's time is counted as usage (once)."""
        async with self._pool.connection() as conn, conn.transaction():
            moved = await self._move(conn, tenant, sid, ("ending",), "ended", reason)
            if moved is None:
                return
            seconds = 0.0
            if moved["started_at"] is not None:
                seconds = max(0.0, (moved["ending_at"] - moved["started_at"]).total_seconds())
            await conn.execute(
                "INSERT INTO usage_events (tenant_id, session_id, metric, key, amount, stage)"
                " VALUES (%s, %s, 'session_seconds', 'session', %s, 'session-control')"
                " ON CONFLICT DO NOTHING", (tenant, sid, seconds))
        await self._registry.put(tenant, sid, "ended", moved["edge"], moved["campaign_id"])
        log.info("session ended", extra={"tenant": tenant, "session": sid, "reason": reason})

    # after a restart

    async def reconcile(self) -> dict[str, int]:
        """Finish what a killed session-control began: pending sessions are announced again
        (idempotently: claims that exist are not published twice), active sessions get any
        missing claim back, or move to ending when their stop was already published; the
        live registry is rebuilt from PostgreSQL."""
        counts = {"pending": 0, "active": 0, "claims": 0, "stopped": 0}
        for session in await self.live():
            if session.state == "pending":
                campaign = await self.campaign_of(session.tenant, session.id)
                await self._announce(session.tenant, session.id, campaign, session.edge,
                                     session.campaign)
                await self.transition(session.tenant, session.id, ("pending",), "active",
                                      "start completed after a session-control restart")
                counts["pending"] += 1
            elif session.state == "active":
                counts["active"] += 1
                if await self._stop_published(session.tenant, session.id):
                    await self.transition(session.tenant, session.id, ("active",), "ending",
                                          "its stop was published before a session-control restart")
                    counts["stopped"] += 1
                else:
                    counts["claims"] += len(await self.publish_missing_claims(session.tenant, session.id))
        live = await self.live()
        await self._registry.reconcile([(s.tenant, s.id, s.state, s.edge, s.campaign) for s in live])
        return counts

    async def _stop_published(self, tenant: str, sid: str) -> bool:
        try:
            await self._js.get_last_msg(CONTROL, SessionSubjects(tenant, sid).ctl("session.stopped"))
            return True
        except NotFoundError:
            return False

    # transitions

    async def transition(self, tenant: str, sid: str, from_states: tuple[str, ...], to: str,
                         reason: str) -> bool:
        async with self._pool.connection() as conn, conn.transaction():
            moved = await self._move(conn, tenant, sid, from_states, to, reason)
        if moved is not None:
            await self._registry.put(tenant, sid, to, moved["edge"], moved["campaign_id"])
        return moved is not None

    async def _move(self, conn: AsyncConnection, tenant: str, sid: str, from_states: tuple[str, ...],
                    to: str, reason: str) -> dict | None:
        stamp = f", {_STAMP[to]} = coalesce(s.{_STAMP[to]}, now())" if to in _STAMP else ""
        cur = await conn.execute(
            f"UPDATE sessions s SET state = %s, reason = %s{stamp} FROM sessions old"
            " WHERE s.tenant_id = %s AND s.id = %s AND old.tenant_id = s.tenant_id AND old.id = s.id"
            " AND s.state::text = ANY(%s) RETURNING old.state::text AS old_state, s.*",
            (to, reason, tenant, sid, list(from_states)))
        row = await cur.fetchone()
        if row is None:
            return None
        await self._record(conn, tenant, sid, row["old_state"], to, reason)
        return row

    @staticmethod
    async def _record(conn: AsyncConnection, tenant: str, sid: str, old: str | None, new: str,
                      reason: str) -> None:
        await conn.execute(
            "INSERT INTO session_transitions (tenant_id, session_id, from_state, to_state, reason)"
            " VALUES (%s, %s, %s, %s, %s)", (tenant, sid, old, new, reason))

    @staticmethod
    async def _exists(conn: AsyncConnection, tenant: str, sid: str) -> bool:
        cur = await conn.execute("SELECT 1 FROM sessions WHERE tenant_id = %s AND id = %s", (tenant, sid))
        return await cur.fetchone() is not None

    @staticmethod
    async def _row(conn: AsyncConnection, tenant: str, sid: str) -> dict:
        cur = await conn.execute(f"SELECT {_COLUMNS} FROM sessions WHERE tenant_id = %s AND id = %s",
                                 (tenant, sid))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no session {sid!r}")
        return row


SEED_BUDGET = MAX_EVENT_BYTES - 2048  # headroom under the bus's limit


def fit_seed(started: SessionStarted, recaps: dict[str, str], facts: dict[str, list[str]],
             budget: int = SEED_BUDGET) -> SessionStarted:
    """``started`` with what each NPC of its campaign remembers (docs/adr/0007), kept under
    ``budget`` bytes with the campaign: the oldest facts go first, then the longest recap is
    halved, until it fits. NPCs the campaign no longer has are left out."""
    known = {npc.token for npc in started.campaign.npcs}
    recaps = {npc: text[:MAX_SEED_RECAP_CHARS] for npc, text in recaps.items()
              if npc in known and text.strip()}
    facts = {npc: [f[:MAX_FACT_CHARS] for f in texts if f.strip()][-MAX_SEED_FACTS:]
             for npc, texts in facts.items() if npc in known}
    facts = {npc: texts for npc, texts in facts.items() if texts}
    while True:
        event = started.model_copy(update={"memory": SessionMemorySeed(recaps=recaps, facts=facts)})
        if len(event.to_bytes()) <= budget or not (recaps or facts):
            return event
        if facts:
            npc = max(facts, key=lambda n: len(facts[n]))
            facts[npc] = facts[npc][1:]
            if not facts[npc]:
                del facts[npc]
        else:
            npc = max(recaps, key=lambda n: len(recaps[n]))
            recaps[npc] = recaps[npc][: len(recaps[npc]) // 2]
            if len(recaps[npc]) < 40:
                del recaps[npc]
