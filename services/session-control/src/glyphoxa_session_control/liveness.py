"""Liveness: who holds each live session, noticed from the heartbeat bucket.

Every ``interval`` the watchdog compares the live sessions in PostgreSQL with the heartbeats
of stage replicas and edges (keys expire ``NATS_HEARTBEAT_TTL_S`` after a replica's last
put). A role (stage or edge) without a live holder is noticed at once and logged; if no
replica takes the claim over within ``grace`` the session is ended with the reason. An
ending session becomes ended once nobody holds it. A replica that still serves an ended
session is told to stop again.
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
from glyphoxa_runtime.recent import Recent
from glyphoxa_session_control.lifecycle import LIVE, Sessions
from glyphoxa_session_control.metrics import LIVENESS_ENDED, ORPHANS, SESSIONS, ZOMBIES
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


def claim_holders(held: dict[str, Heartbeat]) -> list[ClaimHolder]:
    def when(beat: Heartbeat) -> datetime:
        return datetime.fromtimestamp(beat.at_ns / 1e9, UTC)
    return [ClaimHolder(role=role, replica=held[role].replica if role in held else None,
                        last_heartbeat=when(held[role]) if role in held else None) for role in ROLES]


class Watchdog:
    def __init__(self, sessions: Sessions, view: HeartbeatView, grace_s: float,
                 ending_timeout_s: float, interval_s: float):
        self._sessions, self._view = sessions, view
        self._grace, self._ending_timeout, self._interval = grace_s, ending_timeout_s, interval_s
        self._missing: dict[tuple[str, str], float] = {}
        self._noticed: set[tuple[str, str]] = set()
        self._claiming_s = min(5.0, grace_s / 3)  # a new session's roles take their claims
        self._zombie_told: Recent[str, float] = Recent(4096)  # a forgotten one is told again
        self.beats: list[Heartbeat] = []

    async def run(self) -> None:
        await self._view.start()
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
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("liveness check failed")
            await asyncio.sleep(self._interval)

    async def check(self) -> None:
        self.beats = self._view.beats()
        holders = holders_by_session(self.beats)
        live = await self._sessions.live()
        for state in LIVE:
            SESSIONS.labels(state=state).set(sum(1 for s in live if s.state == state))
        now = time.monotonic()
        live_keys = set()
        for session in live:
            key = f"{session.tenant}.{session.id}"
            live_keys.add(key)
            held = holders.get(key, {})
            if session.state == "active":
                await self._check_active(session, key, held, now)
            elif session.state == "ending":
                await self._check_ending(session, held)
        self._missing = {k: v for k, v in self._missing.items() if k[0] in live_keys}
        self._noticed &= set(self._missing)
        await self._tell_zombies({k: v for k, v in holders.items() if k not in live_keys}, now)

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
                await self._sessions.end(session.tenant, session.id, reason)
                return

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
