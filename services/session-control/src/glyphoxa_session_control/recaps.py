"""Recaps of ended sessions (docs/adr/0007): one per NPC that witnessed anything, made by
npc-brain in the background and kept in ``npc_recaps``, where the GM reads and edits them and
the next session's prompt starts from them.

The queue lives in the table, so a restart loses nothing: every pass adds a pending row for
each (ended session, witnessing NPC) that has none, then asks npc-brain for the oldest due
one (``glxrecap.make``). ``busy`` (a turn came first) and no npc-brain at all leave it
pending for the next try without counting an attempt; an error counts one, and the fifth, or
one npc-brain says will never work, ends the row ``failed`` with the error for the GM to see.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from glyphoxa_campaign import Campaign
from glyphoxa_events.recaps import (
    MAX_EXCHANGE_CHARS,
    MAX_EXCHANGES,
    RECAP_SUBJECT,
    RecapReply,
    RecapRequest,
)
from glyphoxa_session_control.metrics import RECAPS

log = logging.getLogger("glyphoxa.session_control.recaps")

MAX_ATTEMPTS = 5

# a pending recap for every NPC that witnessed an exchange of a session that has ended
_DISCOVER = """
INSERT INTO npc_recaps (tenant_id, campaign_id, session_id, npc, status)
SELECT DISTINCT m.tenant_id, m.campaign_id, m.session_id, w.npc, 'pending'
  FROM memories m
  JOIN sessions s ON s.tenant_id = m.tenant_id AND s.id = m.session_id
 CROSS JOIN LATERAL unnest(m.witnesses) AS w(npc)
 WHERE m.kind = 'exchange' AND s.state = 'ended'
   AND s.ended_at > now() - make_interval(days => %(days)s)
ON CONFLICT DO NOTHING
"""

# the oldest pending recap that is due (``next_try_at``: 30 s after busy, doubling per failure)
_DUE = """
SELECT r.id, r.tenant_id, r.campaign_id, r.session_id, r.npc, r.attempts, s.campaign
  FROM npc_recaps r
  JOIN sessions s ON s.tenant_id = r.tenant_id AND s.id = r.session_id
 WHERE r.status = 'pending' AND r.next_try_at <= now()
 ORDER BY r.next_try_at, r.id
 LIMIT 1
"""

_EXCHANGES = """
SELECT speaker, npc, player_text, npc_text
  FROM memories
 WHERE tenant_id = %(tenant)s AND campaign_id = %(campaign)s AND session_id = %(session)s
   AND kind = 'exchange' AND %(npc)s = ANY(witnesses)
 ORDER BY spoken_at, id
 LIMIT %(limit)s
"""

_PREVIOUS = """
SELECT text FROM npc_recaps
 WHERE tenant_id = %(tenant)s AND campaign_id = %(campaign)s AND npc = %(npc)s
   AND status = 'done' AND session_id <> %(session)s
 ORDER BY created_at DESC LIMIT 1
"""


@dataclass(frozen=True)
class Due:
    id: int
    tenant: str
    campaign_id: str
    session: str
    npc: str
    attempts: int
    campaign: Campaign


def exchange_lines(rows: list[dict], campaign: Campaign) -> tuple[str, ...]:
    """'sam to Greta: ... / Greta: ...', one line per exchange, each bounded."""
    lines = []
    for row in rows:
        npc = campaign.npc(row["npc"])
        name = npc.name if npc is not None else row["npc"]
        said = f"{row['speaker'] or 'the GM'} to {name}: {row['player_text']}".strip()
        reply = f" / {name}: {row['npc_text']}" if row["npc_text"] else f" / {name} did not answer."
        lines.append((said + reply)[:MAX_EXCHANGE_CHARS])
    return tuple(lines)


class RecapQueue:
    def __init__(self, nc: Client, pool: AsyncConnectionPool, *, every_s: float = 10.0,
                 retry_s: float = 30.0, request_timeout_s: float = 300.0, days: int = 7):
        self._nc, self._pool = nc, pool
        self._every_s, self._retry_s, self._timeout_s, self._days = (
            every_s, retry_s, request_timeout_s, days)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="recaps")

    def poke(self) -> None:
        """A session ended: look now rather than at the next pass."""
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                while await self.once():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database may be away; try again
                log.warning("recap pass failed: %s", exc)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._every_s)
            except TimeoutError:
                pass

    async def once(self) -> bool:
        """Queue what is new and make the oldest due recap; whether one was tried."""
        async with self._pool.connection() as conn:
            await conn.execute(_DISCOVER, {"days": self._days})
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_DUE)
            row = await cur.fetchone()
        if row is None:
            return False
        due = Due(row["id"], row["tenant_id"], row["campaign_id"], row["session_id"], row["npc"],
                  row["attempts"], Campaign.model_validate(row["campaign"]))
        await self._make(due)
        return True

    async def _make(self, due: Due) -> None:
        args = {"tenant": due.tenant, "campaign": due.campaign_id, "session": due.session,
                "npc": due.npc, "limit": MAX_EXCHANGES}
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_EXCHANGES, args)
            rows = await cur.fetchall()
            await cur.execute(_PREVIOUS, args)
            previous = await cur.fetchone()
        if not rows:  # its memories were deleted since: nothing to sum up
            await self._finish(due, "failed", error="nothing left to recap (memories deleted)")
            return
        req = RecapRequest(tenant=due.tenant, session=due.session, campaign=due.campaign,
                           npc=due.npc, exchanges=exchange_lines(rows, due.campaign),
                           previous=(previous or {}).get("text", "")[:2000])
        try:
            msg = await self._nc.request(RECAP_SUBJECT, req.model_dump_json().encode(),
                                         timeout=self._timeout_s)
            reply = RecapReply.model_validate_json(msg.data)
        except NoRespondersError:
            await self._later(due, "no npc-brain is running")
            return
        except NatsTimeout:
            await self._failed_try(due, RecapReply(ok=False, error=(
                f"npc-brain did not answer within {self._timeout_s:.0f} s")))
            return
        except ValidationError as exc:
            await self._failed_try(due, RecapReply(ok=False, error=f"bad reply: {exc}"[:500]))
            return
        if reply.busy:
            await self._later(due, "npc-brain was busy with turns")
        elif reply.ok:
            await self._finish(due, "done", text=reply.text, model=reply.provider)
            log.info("recap made", extra={"tenant": due.tenant, "session": due.session,
                                          "npc": due.npc, "provider": reply.provider})
        else:
            await self._failed_try(due, reply)

    async def _later(self, due: Due, why: str) -> None:
        RECAPS.labels(result="later").inc()
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE npc_recaps SET updated_at = now(), error = %s, "
                "next_try_at = now() + make_interval(secs => %s) WHERE id = %s",
                (why, self._retry_s, due.id))

    async def _failed_try(self, due: Due, reply: RecapReply) -> None:
        attempts = due.attempts + 1
        final = attempts >= MAX_ATTEMPTS or not reply.retryable
        log.warning("recap failed%s: %s", " for good" if final else ", will try again",
                    reply.error, extra={"tenant": due.tenant, "session": due.session,
                                        "npc": due.npc, "attempts": attempts})
        await self._finish(due, "failed" if final else "pending", error=reply.error or "failed",
                           attempts=attempts)

    async def _finish(self, due: Due, status: str, *, text: str | None = None,
                      model: str | None = None, error: str | None = None,
                      attempts: int | None = None) -> None:
        if status != "pending":
            RECAPS.labels(result=status).inc()
        backoff = self._retry_s * 2 ** (attempts or 0)
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE npc_recaps SET status = %s, text = COALESCE(%s, text), "
                "model = COALESCE(%s, model), error = %s, attempts = COALESCE(%s, attempts), "
                "next_try_at = now() + make_interval(secs => %s), updated_at = now() "
                "WHERE id = %s AND status = 'pending'",
                (status, text, model, error if status != "done" else None, attempts, backoff,
                 due.id))
