"""Reading back what was recorded: a session's transcript and turn table, a tenant's usage."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool

from glyphoxa_session_control.errors import Invalid, NotFound
from glyphoxa_session_control.lifecycle import Sessions, month_start
from glyphoxa_session_control.models import TranscriptLine, TurnRow, Usage

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def month_bounds(month: str | None) -> tuple[datetime, datetime, str]:
    if month is None:
        start = month_start()
    else:
        m = _MONTH.match(month)
        if not m or not 1 <= int(m[2]) <= 12 or not 1 <= int(m[1]) <= 9998:
            raise Invalid(f"month: {month!r} is not YYYY-MM")
        start = datetime(int(m[1]), int(m[2]), 1, tzinfo=UTC)
    end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
    return start, end, f"{start:%Y-%m}"


class Reports:
    def __init__(self, pool: AsyncConnectionPool, sessions: Sessions):
        self._pool, self._sessions = pool, sessions

    async def transcript(self, tenant: str, sid: str) -> list[TranscriptLine]:
        await self._exists(tenant, sid)
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT l.turn_id, l.role, l.speaker, l.text, l.complete, l.spoken_ns, t.npc,"
                " t.outcome, t.routing FROM transcript_lines l LEFT JOIN turns t ON l.role = 'player'"
                " AND t.tenant_id = l.tenant_id AND t.session_id = l.session_id"
                " AND t.turn_id = l.turn_id WHERE l.tenant_id = %s AND l.session_id = %s"
                " ORDER BY l.spoken_ns, l.role DESC",
                (tenant, sid))
            return [TranscriptLine(**row) for row in await cur.fetchall()]

    async def turns(self, tenant: str, sid: str) -> list[TurnRow]:
        await self._exists(tenant, sid)
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT turn_id, speaker, npc, outcome, reason, transcript, latency, speech_end_ns,"
                " llm_provider, routing, failure, memories FROM turns"
                " WHERE tenant_id = %s AND session_id = %s"
                " ORDER BY speech_end_ns, turn_id",
                (tenant, sid))
            return [TurnRow(**row) for row in await cur.fetchall()]

    async def usage(self, tenant: str, month: str | None = None) -> Usage:
        start, end, label = month_bounds(month)
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT metric, sum(amount) AS total FROM usage_events WHERE tenant_id = %s"
                " AND at >= %s AND at < %s GROUP BY metric", (tenant, start, end))
            totals = {row["metric"]: float(row["total"]) for row in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT monthly_session_hours, (SELECT count(*) FROM sessions s WHERE s.tenant_id = t.id"
                " AND s.state <> 'ended') AS live FROM tenants t WHERE t.id = %s", (tenant,))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no tenant {tenant!r}")
            session_s = totals.get("session_seconds", 0.0)
            if label == f"{month_start():%Y-%m}":
                session_s = await self._sessions.session_seconds(conn, tenant)
        return Usage(
            tenant=tenant, month=label, session_seconds=round(session_s, 3),
            stt_audio_seconds=round(totals.get("stt_audio_seconds", 0.0), 3),
            llm_tokens_in=int(totals.get("llm_tokens_in", 0)),
            llm_tokens_out=int(totals.get("llm_tokens_out", 0)),
            tts_characters=int(totals.get("tts_characters", 0)),
            monthly_session_hours=float(row["monthly_session_hours"]), sessions_live=row["live"])

    async def _exists(self, tenant: str, sid: str) -> None:
        if await self._sessions.state_of(tenant, sid) is None:
            raise NotFound(f"no session {sid!r}")
