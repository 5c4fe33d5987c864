"""Liveness: who holds each live session, noticed from the heartbeat bucket.

Every ``interval`` the watchdog compares the live sessions in PostgreSQL with the heartbeats
of stage replicas and edges (keys expire ``NATS_HEARTBEAT_TTL_S`` after a replica's last
put). A role (stage or edge) without a live holder is noticed at once and logged; if no
replica takes the claim over within ``grace`` the session is ended with the reason. An
ending session becomes ended once nobody holds it. A replica that still serves an ended
session is told to stop again.

It judges only heartbeats it could have received: while session-control's own NATS
connection is down it pauses, and after each reconnect it watches the bucket afresh and
every role has the whole grace again. It does not need PostgreSQL to answer: while it is
away the watchdog goes on with the live sessions it last read, a session it ends is told
to stop on the bus at once and its state change is stored once PostgreSQL is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from glyphoxa_bus.heartbeat import HeartbeatView
from glyphoxa_events.models import Heartbeat
from glyphoxa_events.subjects import STAGES
from glyphoxa_pg.pool import unreachable
from glyphoxa_runtime.recent import Recent
from glyphoxa_session_control.availability import Availability
from glyphoxa_session_control.lifecycle import LIVE, Sessions
from glyphoxa_session_control.metrics import (
    LIVENESS_ENDED,
    ORPHANS,
    REPLICA_CAPACITY,
    REPLICAS,
    SESSIONS,
    ZOMBIES,
)
from glyphoxa_session_control.models import ClaimHolder, Session

log = logging.getLogger("glyphoxa.session_control.liveness")

ROLES = (*STAGES, "edge")


def holders_by_session(beats: Iterable[Heartbeat]) -> dict[str, dict[str, Heartbeat]]:
    out: dict[str, dict[str, Heartbeat]] = {}
    for beat in beats:
        for key in beat.sessions:
            held = out.setdefault(key, {})
            if beat.role not in held or held[beat.role].at_ns < beat.at_ns:
                held[beat.role] = beat
    return out


def count_replicas(beats: Iterable[Heartbeat]) -> None:
    """``glyphoxa_session_control_replicas{role}`` and their capacity, from live heartbeats."""
    replicas = {role: 0 for role in ROLES}
    capacity = {role: 0 for role in ROLES}
    for beat in beats:
        if beat.role in replicas:
            replicas[beat.role] += 1
            capacity[beat.role] += beat.capacity
    for role in ROLES:
        REPLICAS.labels(role=role).set(replicas[role])
        REPLICA_CAPACITY.labels(role=role).set(capacity[role])


def claim_holders(held: dict[str, Heartbeat]) -> list[ClaimHolder]:
    def when(beat: Heartbeat) -> datetime:
        return datetime.fromtimestamp(beat.at_ns / 1e9, UTC)
    return [ClaimHolder(role=role, replica=held[role].replica if role in held else None,
                        last_heartbeat=when(held[role]) if role in held else None) for role in ROLES]


class Watchdog:
    def __init__(self, sessions: Sessions, view: HeartbeatView, availability: Availability,
                 grace_s: float, ending_timeout_s: float, interval_s: float, ttl_s: float):
        self._sessions, self._view, self._availability = sessions, view, availability
        self._grace, self._ending_timeout, self._interval = grace_s, ending_timeout_s, interval_s
        self._ttl = ttl_s
        self._missing: dict[tuple[str, str], float] = {}
        self._noticed: set[tuple[str, str]] = set()
        self._claiming_s = min(5.0, grace_s / 3)  # a new session's roles take their claims
        self._zombie_told: Recent[str, float] = Recent(4096)  # a forgotten one is told again
        self._connection: int | None = None  # the NATS connection the view watches on
        self._watching: float | None = None  # None: paused, no heartbeat can arrive
        self._known: dict[str, Session] = {}  # the live sessions PostgreSQL last named
        self._unrecorded: dict[str, tuple[Session, str]] = {}  # ended while it was away
        self._from_memory = False  # PostgreSQL is away: self._known is all there is
        self.beats: list[Heartbeat] = []

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            await self._view.stop()

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                if unreachable(exc):  # the next round goes on without PostgreSQL
                    self._availability.pg.failed(exc)
                else:
                    log.exception("liveness check failed")
            await asyncio.sleep(self._interval)

    async def check(self) -> None:
        now = time.monotonic()
        watching = await self._watching_since(now)
        if watching is None:
            return
        self.beats = self._view.beats()
        count_replicas(self.beats)
        holders = holders_by_session(self.beats)
        live = await self._live_sessions()
        for state in LIVE:
            SESSIONS.labels(state=state).set(sum(1 for s in live.values() if s.state == state))
        settled = now - watching >= self._ttl  # every live holder has put since
        db_ok = self._availability.pg.ok
        for key, session in live.items():
            held = holders.get(key, {})
            if session.state == "active":
                await self._check_active(session, key, held, now)
            elif session.state == "ending" and settled and db_ok:
                await self._check_ending(session, held)
        self._missing = {k: v for k, v in self._missing.items() if k[0] in live}
        self._noticed &= set(self._missing)
        if db_ok:
            await self._tell_zombies({k: v for k, v in holders.items() if k not in live}, now)

    async def _watching_since(self, now: float) -> float | None:
        """Since when heartbeats can arrive, None while they cannot. After a reconnect the
        bucket is watched afresh and every clock restarts: time in which nothing could
        arrive counts against no one."""
        connection = self._availability.bus_connection
        if connection is None:
            if self._watching is not None:
                log.warning("liveness paused: NATS is unreachable, so no heartbeat can arrive; "
                            "no session is judged until it is back")
            self._watching = None
            return None
        if self._watching is not None and connection == self._connection:
            return self._watching
        resumed = self._connection is not None
        try:
            await self._view.stop()
            await self._view.start()
        except Exception as exc:  # noqa: BLE001 - still paused; the next round tries again
            log.warning("liveness cannot watch the heartbeats yet: %s", exc)
            return None
        self._connection, self._watching = connection, now
        self._missing.clear()
        self._noticed.clear()
        if resumed:
            log.info("liveness resumed: every session's holders have the whole grace again",
                     extra={"grace_s": self._grace})
        return now

    async def _live_sessions(self) -> dict[str, Session]:
        """The live sessions from PostgreSQL, or while it is away the ones it last named
        (ends decided meanwhile are stored first once it answers)."""
        pg = self._availability.pg
        if pg.ok:
            try:
                for key, (session, reason) in list(self._unrecorded.items()):
                    await self._sessions.record_end(session.tenant, session.id, reason)
                    del self._unrecorded[key]
                self._known = {f"{s.tenant}.{s.id}": s for s in await self._sessions.live()}
                self._remembering(False)
                return self._known
            except Exception as exc:
                if not unreachable(exc):
                    raise
                pg.failed(exc)
        self._remembering(True)
        return self._known

    def _remembering(self, now: bool) -> None:
        if now and not self._from_memory:
            log.warning("liveness goes on with the live sessions it knew while PostgreSQL is "
                        "away", extra={"sessions": len(self._known)})
        elif self._from_memory and not now:
            log.info("liveness reads the live sessions from PostgreSQL again")
        self._from_memory = now

    async def _check_active(self, session: Session, key: str, held: dict[str, Heartbeat],
                            now: float) -> None:
        for role in ROLES:
            if role in held:
                self._missing[(key, role)] = now  # last seen held: the grace counts from here
                if (key, role) in self._noticed:
                    self._noticed.discard((key, role))
                    log.info("session has a holder again", extra={
                        "tenant": session.tenant, "session": session.id, "role": role,
                        "replica": held[role].replica})
                continue
            since = self._missing.setdefault((key, role), now)
            if (key, role) not in self._noticed and now - since >= self._claiming_s:
                self._noticed.add((key, role))
                ORPHANS.labels(role=role).inc()
                log.warning("session has no live holder", extra={
                    "tenant": session.tenant, "session": session.id, "role": role})
            if now - since >= self._grace:
                what = "edge" if role == "edge" else f"{role} stage"
                reason = (f"no live {what} for {self._grace:g} s (it stopped heartbeating and "
                          "nothing took over)")
                LIVENESS_ENDED.labels(role=role).inc()
                await self._end(session, key, reason)
                return

    async def _end(self, session: Session, key: str, reason: str) -> None:
        """Tell the stages at once; store the change now, or once PostgreSQL is back."""
        await self._sessions.announce_end(session.tenant, session.id, reason)
        pg = self._availability.pg
        if pg.ok:
            try:
                await self._sessions.record_end(session.tenant, session.id, reason)
                return
            except Exception as exc:
                if not unreachable(exc):
                    raise
                pg.failed(exc)
        log.warning("session told to end while PostgreSQL is away; stored once it answers",
                    extra={"tenant": session.tenant, "session": session.id, "reason": reason})
        self._unrecorded[key] = (session, reason)
        self._known[key] = session.model_copy(update={
            "state": "ending", "reason": reason, "ending_at": datetime.now(UTC)})

    async def _check_ending(self, session: Session, held: dict[str, Heartbeat]) -> None:
        if not held:
            await self._sessions.finish(session.tenant, session.id, "every stage and the edge let go")
            return
        ending = session.ending_at
        if ending is not None and (datetime.now(UTC) - ending).total_seconds() >= self._ending_timeout:
            await self._sessions.finish(
                session.tenant, session.id,
                f"still held by {', '.join(sorted(held))} after {self._ending_timeout:g} s; ended anyway")
    async def _tell_zombies(self, holders: dict[str, dict[str, Heartbeat]], now: float) -> None:
        for key, held in holders.items():
            tenant, _, sid = key.partition(".")
            if now - self._zombie_told.get(key, -1e9) < self._grace:
                continue
            if await self._sessions.state_of(tenant, sid) != "ended":
                continue  # unknown here (not ours) or just now starting
            self._zombie_told.remember(key, now)
            for role in held:
                ZOMBIES.labels(role=role).inc()
            log.warning("replicas still serve an ended session; telling them to stop", extra={
                "tenant": tenant, "session": sid, "roles": sorted(held)})
            await self._sessions.tell_stopped(tenant, sid, "the session has ended")
