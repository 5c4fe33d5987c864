"""The migration runner and the test-database guard, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from importlib.resources import files

import psycopg
import pytest

from glyphoxa_pg.guard import require_test_database
from glyphoxa_pg.migrations import Migration, MigrationError, load_migrations, migrate
from tests.support.pg import fresh_database

pytestmark = pytest.mark.integration

M1 = Migration(1, "first", "CREATE TABLE a (x int); CREATE TABLE b (y int);")
M2 = Migration(2, "second", "ALTER TABLE a ADD COLUMN z text;")


async def _migrate(dsn: str, migrations: list[Migration]) -> list[int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await migrate(conn, migrations)


async def test_each_migration_runs_once_in_order(pg_admin_dsn):
    dsn = fresh_database(pg_admin_dsn)
    assert await _migrate(dsn, [M1]) == [1]
    assert await _migrate(dsn, [M1]) == []  # never "run every file each boot"
    assert await _migrate(dsn, [M1, M2]) == [2]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT version, name FROM glyphoxa_migrations ORDER BY version").fetchall() == [
            (1, "first"), (2, "second")]
        conn.execute("INSERT INTO a (x, z) VALUES (1, 'ok')")


async def test_two_replicas_migrating_at_once_apply_each_migration_once(pg_admin_dsn):
    dsn = fresh_database(pg_admin_dsn)
    results = await asyncio.gather(*(_migrate(dsn, [M1, M2]) for _ in range(4)))
    assert sorted(v for r in results for v in r) == [1, 2]


async def test_a_changed_or_unknown_migration_stops_the_start(pg_admin_dsn):
    dsn = fresh_database(pg_admin_dsn)
    await _migrate(dsn, [M1, M2])
    edited = Migration(1, "first", M1.sql + " -- edited")
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        await _migrate(dsn, [edited, M2])
    with pytest.raises(MigrationError, match="newer release"):
        await _migrate(dsn, [M1])


async def test_a_failing_migration_leaves_nothing_half_done(pg_admin_dsn):
    dsn = fresh_database(pg_admin_dsn)
    broken = Migration(1, "broken", "CREATE TABLE c (x int); SELECT no_such_function();")
    with pytest.raises(psycopg.errors.UndefinedFunction):
        await _migrate(dsn, [broken])
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT to_regclass('c')").fetchone() == (None,)
        assert conn.execute("SELECT to_regclass('glyphoxa_migrations')").fetchone() == (None,)


async def test_session_control_schema_applies_on_postgres_18(pg_admin_dsn):
    dsn = fresh_database(pg_admin_dsn)
    migrations = load_migrations(files("glyphoxa_session_control") / "migrations")
    assert await _migrate(dsn, migrations) == [m.version for m in migrations]
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO audit_log (actor, action) VALUES ('t', 'x')")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM audit_log")


def test_load_migrations_refuses_bad_names_and_gaps(tmp_path):
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="without gaps"):
        load_migrations(tmp_path)
    (tmp_path / "3_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="not named NNNN_name.sql"):
        load_migrations(tmp_path)


@pytest.mark.parametrize("dbname", ["glyphoxa", "postgres", "prod_test_data", "glyphoxatest"])
def test_the_guard_refuses_databases_not_named_for_tests(dbname):
    with pytest.raises(RuntimeError, match="refusing to run tests"):
        require_test_database(f"postgresql://u@h/{dbname}")


@pytest.mark.parametrize("dbname", ["glyphoxa_test_ab12", "test_x", "ci_test"])
def test_the_guard_accepts_test_databases(dbname):
    assert require_test_database(f"postgresql://u@h/{dbname}") == dbname
