"""A small versioned migration runner.

Migrations are files ``NNNN_what.sql`` in one directory. Each is applied once, in its own
transaction together with its row in ``glyphoxa_migrations`` (version, name, checksum), under
an advisory lock so that two replicas starting together do not race. A migration that was
changed after it was applied, or a database newer than the code, stops the start-up with a
clear error instead of guessing.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib.resources.abc import Traversable

from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x67_6C_78_6D  # "glxm"


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Traversable) -> list[Migration]:
    found: list[Migration] = []
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE.match(entry.name)
        if not match:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps, found {versions}")
    return found


async def migrate(conn: AsyncConnection, migrations: list[Migration]) -> list[int]:
    """Apply the migrations not yet applied; returns the versions applied now."""
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))  # replicas queue here
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS glyphoxa_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = conn.cursor(row_factory=tuple_row)
        await cur.execute("SELECT version, checksum FROM glyphoxa_migrations")
        applied = {version: checksum for version, checksum in await cur.fetchall()}
        _check_applied(applied, migrations)
        for migration in migrations:
            if migration.version in applied:
                continue
            log.info("applying migration %04d_%s", migration.version, migration.name)
            async with conn.transaction():
                await conn.execute(sql.SQL(migration.sql))  # type: ignore[arg-type]
                await conn.execute(
                    "INSERT INTO glyphoxa_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            applied_now.append(migration.version)
    return applied_now


def _check_applied(applied: dict[int, str], migrations: list[Migration]) -> None:
    known = {m.version: m for m in migrations}
    for version, checksum in sorted(applied.items()):
        if version not in known:
            raise MigrationError(
                f"the database has migration {version}, which this code does not know: "
                f"it was migrated by a newer release (this one knows 1..{len(migrations)})")
        if checksum != known[version].checksum:
            raise MigrationError(
                f"migration {version:04d}_{known[version].name} was changed after it was applied; "
                "add a new migration instead of editing an applied one")
