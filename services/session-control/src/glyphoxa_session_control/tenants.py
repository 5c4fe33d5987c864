"""Tenants, their API keys and their secrets (bot token, provider API keys).

Secrets are sealed with :class:`SecretBox` before they reach the database and are never
returned; API keys are stored as SHA-256 digests and shown once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from psycopg.errors import UniqueViolation
from psycopg_pool import AsyncConnectionPool

from glyphoxa_runtime.logs import register_secret
from glyphoxa_session_control import audit
from glyphoxa_session_control.crypto import SecretBox, SecretKeyError, key_digest, new_api_key
from glyphoxa_session_control.errors import Conflict, NotFound
from glyphoxa_session_control.models import (
    ApiKey,
    ApiKeyCreated,
    SecretInfo,
    Tenant,
    TenantCreate,
    TenantPatch,
    Tier,
)

log = logging.getLogger("glyphoxa.session_control.tenants")

_TENANT_COLUMNS = ("id, name, max_concurrent_sessions, monthly_session_hours, allowed_guild_ids,"
                   " bot_token_encrypted IS NOT NULL AS bot_token_set, discord_edge, disabled,"
                   " created_at, updated_at")


def _tenant(row: dict) -> Tenant:
    return Tenant(
        id=row["id"], name=row["name"], allowed_guild_ids=list(row["allowed_guild_ids"]),
        tier=Tier(max_concurrent_sessions=row["max_concurrent_sessions"],
                  monthly_session_hours=float(row["monthly_session_hours"])),
        bot_token_set=row["bot_token_set"], discord_edge=row["discord_edge"],
        disabled=row["disabled"],
        created_at=row["created_at"], updated_at=row["updated_at"])


Changed = Callable[[str], Awaitable[None]]


class Tenants:
    def __init__(self, pool: AsyncConnectionPool, box: SecretBox, changed: Changed | None = None):
        self._pool, self._box = pool, box
        self._changed = changed
        """Told the discord-edge whose bots changed (a token, guilds, disabled, assignment)."""

    def _open(self, sealed: bytes) -> str:
        secret = self._box.open(sealed)
        register_secret(secret)
        return secret

    def _seal(self, secret: str) -> bytes:
        register_secret(secret)  # second line of defence: scrubbed from any log line
        return self._box.seal(secret)

    async def create(self, body: TenantCreate, actor: str) -> Tenant:
        sealed = self._seal(body.bot_token) if body.bot_token else None
        async with self._pool.connection() as conn, conn.transaction():
            try:
                cur = await conn.execute(
                    "INSERT INTO tenants (id, name, max_concurrent_sessions, monthly_session_hours,"
                    " allowed_guild_ids, bot_token_encrypted, discord_edge)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    f" RETURNING {_TENANT_COLUMNS}",
                    (body.id, body.name, body.tier.max_concurrent_sessions,
                     body.tier.monthly_session_hours, body.allowed_guild_ids, sealed,
                     body.discord_edge))
            except UniqueViolation:
                raise Conflict(f"tenant {body.id!r} already exists") from None
            row = await cur.fetchone()
            await audit.record(conn, actor, body.id, "tenant.create", body.id, name=body.name,
                               tier=body.tier.model_dump(), bot_token_set=sealed is not None)
        if sealed is not None:
            await self._tell(body.discord_edge)
        return _tenant(row)

    async def get(self, tenant: str) -> Tenant:
        async with self._pool.connection() as conn:
            cur = await conn.execute(f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE id = %s", (tenant,))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no tenant {tenant!r}")
        return _tenant(row)

    async def list(self) -> list[Tenant]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(f"SELECT {_TENANT_COLUMNS} FROM tenants ORDER BY id")
            return [_tenant(row) for row in await cur.fetchall()]

    async def update(self, tenant: str, patch: TenantPatch, actor: str) -> Tenant:
        fields = patch.model_dump(exclude_unset=True)
        sets, values = ["updated_at = now()"], []
        for column in ("name", "allowed_guild_ids", "disabled", "discord_edge"):
            if fields.get(column) is not None:
                sets.append(f"{column} = %s")
                values.append(fields[column])
        if patch.tier is not None:
            sets += ["max_concurrent_sessions = %s", "monthly_session_hours = %s"]
            values += [patch.tier.max_concurrent_sessions, patch.tier.monthly_session_hours]
        if patch.bot_token is not None:
            sets.append("bot_token_encrypted = %s")
            values.append(self._seal(patch.bot_token))
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT discord_edge FROM tenants WHERE id = %s", (tenant,))
            before = await cur.fetchone()
            cur = await conn.execute(
                f"UPDATE tenants SET {', '.join(sets)} WHERE id = %s RETURNING {_TENANT_COLUMNS}",
                (*values, tenant))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no tenant {tenant!r}")
            changed = sorted(k for k in fields if k != "bot_token")
            await audit.record(conn, actor, tenant, "tenant.update", tenant, fields=changed,
                               bot_token_changed=patch.bot_token is not None)
        if fields.keys() & {"bot_token", "allowed_guild_ids", "disabled", "discord_edge"}:
            for edge in {before["discord_edge"], row["discord_edge"]}:
                await self._tell(edge)
        return _tenant(row)

    async def bots(self, edge: str) -> list[tuple[str, str, list[str]]]:
        """(tenant, bot token, allowed guilds) of every enabled tenant with a bot on ``edge``."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, bot_token_encrypted, allowed_guild_ids FROM tenants WHERE"
                " discord_edge = %s AND NOT disabled AND bot_token_encrypted IS NOT NULL"
                " ORDER BY id", (edge,))
            rows = await cur.fetchall()
        bots = []
        for r in rows:
            try:
                bots.append((r["id"], self._open(r["bot_token_encrypted"]),
                             list(r["allowed_guild_ids"])))
            except SecretKeyError as exc:  # that tenant's bot stays off; the others run
                log.error("bot token not delivered: %s", exc, extra={"tenant": r["id"]})
        return bots

    async def _tell(self, edge: str) -> None:
        if self._changed is not None:
            await self._changed(edge)

    async def bot_token(self, tenant: str) -> str | None:
        """The decrypted bot token, for the edge that connects to Discord (never the API)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT bot_token_encrypted FROM tenants WHERE id = %s", (tenant,))
            row = await cur.fetchone()
        if row is None or row["bot_token_encrypted"] is None:
            return None
        return self._open(row["bot_token_encrypted"])

    # API keys

    async def create_key(self, tenant: str, label: str, actor: str) -> ApiKeyCreated:
        await self.get(tenant)
        key_id, key = new_api_key()
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO api_keys (id, tenant_id, key_sha256, label) VALUES (%s, %s, %s, %s)"
                " RETURNING id, label, created_at, revoked_at",
                (key_id, tenant, key_digest(key), label))
            row = await cur.fetchone()
            await audit.record(conn, actor, tenant, "api_key.create", key_id, label=label)
        return ApiKeyCreated(**row, key=key)

    async def list_keys(self, tenant: str) -> list[ApiKey]:
        await self.get(tenant)
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, label, created_at, revoked_at FROM api_keys WHERE tenant_id = %s"
                " ORDER BY created_at", (tenant,))
            return [ApiKey(**row) for row in await cur.fetchall()]

    async def revoke_key(self, tenant: str, key_id: str, actor: str) -> ApiKey:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
                " WHERE tenant_id = %s AND id = %s RETURNING id, label, created_at, revoked_at",
                (tenant, key_id))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no API key {key_id!r} for tenant {tenant!r}")
            await audit.record(conn, actor, tenant, "api_key.revoke", key_id)
        return ApiKey(**row)

    async def tenant_of_key(self, key: str) -> str | None:
        """The tenant a (non-revoked) API key of an enabled tenant belongs to."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT k.tenant_id FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
                " WHERE k.key_sha256 = %s AND k.revoked_at IS NULL AND NOT t.disabled",
                (key_digest(key),))
            row = await cur.fetchone()
        return row["tenant_id"] if row else None

    # provider secrets

    async def put_secret(self, tenant: str, name: str, value: str, actor: str) -> SecretInfo:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO tenant_secrets (tenant_id, name, encrypted) VALUES (%s, %s, %s)"
                " ON CONFLICT (tenant_id, name) DO UPDATE SET encrypted = excluded.encrypted,"
                " updated_at = now() RETURNING name, updated_at",
                (tenant, name, self._seal(value)))
            row = await cur.fetchone()
            await audit.record(conn, actor, tenant, "secret.put", name)
        return SecretInfo(**row)

    async def list_secrets(self, tenant: str) -> list[SecretInfo]:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT name, updated_at FROM tenant_secrets WHERE tenant_id = %s"
                                     " ORDER BY name", (tenant,))
            return [SecretInfo(**row) for row in await cur.fetchall()]

    async def delete_secret(self, tenant: str, name: str, actor: str) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute("DELETE FROM tenant_secrets WHERE tenant_id = %s AND name = %s",
                                     (tenant, name))
            if cur.rowcount == 0:
                raise NotFound(f"no secret {name!r}")
            await audit.record(conn, actor, tenant, "secret.delete", name)

    async def secret(self, tenant: str, name: str) -> str | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT encrypted FROM tenant_secrets WHERE tenant_id = %s"
                                     " AND name = %s", (tenant, name))
            row = await cur.fetchone()
        return self._open(row["encrypted"]) if row else None
