"""The append-only audit log of admin actions (never the secrets involved)."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from glyphoxa_session_control.models import AuditEntry


async def record(conn: AsyncConnection, actor: str, tenant: str | None, action: str,
                 target: str = "", **details: object) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, tenant_id, action, target, details) VALUES (%s, %s, %s, %s, %s)",
        (actor, tenant, action, target, Jsonb(details)))


async def entries(pool: AsyncConnectionPool, tenant: str | None, limit: int = 100) -> list[AuditEntry]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, at, actor, tenant_id, action, target, details FROM audit_log"
            " WHERE %(tenant)s::text IS NULL OR tenant_id = %(tenant)s ORDER BY id DESC LIMIT %(limit)s",
            {"tenant": tenant, "limit": limit})
        return [AuditEntry(**row) for row in await cur.fetchall()]
