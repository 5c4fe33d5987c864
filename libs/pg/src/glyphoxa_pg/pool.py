"""An async connection pool that waits for the server at start-up and logs no secrets, and
what tells its users that PostgreSQL is away (``PgHealth``, ``unreachable``)."""

from __future__ import annotations

import asyncio
import logging

from psycopg import InterfaceError, OperationalError
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.errors import QueryCanceled
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from glyphoxa_pg.settings import PgSettings

log = logging.getLogger(__name__)


def dsn_password(dsn: str) -> str | None:
    """The password inside a DSN (to register it with the log scrubber), if any."""
    try:
        return conninfo_to_dict(dsn).get("password") or None
    except Exception:  # noqa: BLE001 - a malformed DSN fails later with psycopg's own error
        return None


def describe_dsn(dsn: str) -> str:
    """``host:port/dbname`` for log lines: never the password."""
    try:
        info = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001
        return "<malformed PG_DSN>"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def pool_conninfo(settings: PgSettings, name: str) -> str:
    """The DSN with the process's name and statement timeout (holds the password)."""
    return make_conninfo(
        settings.dsn.get_secret_value(), application_name=name[:63],
        options=f"-c statement_timeout={int(settings.statement_timeout_s * 1000)}",
    )


async def open_pool(settings: PgSettings, name: str) -> AsyncConnectionPool:
    dsn = settings.dsn.get_secret_value()
    conninfo = pool_conninfo(settings, name)
    pool = AsyncConnectionPool(
        conninfo, min_size=settings.pool_min, max_size=settings.pool_max,
        kwargs={"row_factory": dict_row, "autocommit": True}, open=False, name=name,
        timeout=settings.pool_timeout_s,
    )
    log.info("connecting to PostgreSQL", extra={"pg": describe_dsn(dsn)})
    await pool.open(wait=True, timeout=settings.connect_timeout_s)
    return pool


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says PostgreSQL cannot be reached (down, shutting down, the connection
    lost, no connection within the pool's timeout), not that one statement failed."""
    return isinstance(exc, (OperationalError, InterfaceError)) and not isinstance(exc, QueryCanceled)


class PgHealth:
    """Whether PostgreSQL answers, checked every ``interval_s`` with ``SELECT 1``: what
    ``/readyz`` reports, so a supervisor sees an outage (the pool reconnects by itself),
    and what lets callers refuse work at once instead of waiting for the pool. A caller
    that meets the outage first says so (``failed``). Each change is logged once."""

    def __init__(self, pool: AsyncConnectionPool, interval_s: float = 2.0,
                 timeout_s: float = 2.0):
        self._pool, self._interval_s, self._timeout_s = pool, interval_s, timeout_s
        self.ok = True
        self.problem = ""

    async def check(self) -> bool:
        try:
            async with self._pool.connection(timeout=self._timeout_s) as conn:
                await asyncio.wait_for(conn.execute("SELECT 1"), self._timeout_s)
            problem = ""
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; reported below
            problem = _problem(exc)
        self._report(problem)
        return self.ok

    def failed(self, exc: BaseException) -> None:
        """A caller met ``exc`` from PostgreSQL: if it says the server is away, not ready
        from now until the next check that succeeds."""
        if unreachable(exc):
            self._report(_problem(exc))

    def _report(self, problem: str) -> None:
        if bool(problem) != bool(self.problem):
            if problem:
                log.warning("PostgreSQL unreachable", extra={"reason": problem})
            else:
                log.info("PostgreSQL reachable again")
        self.ok, self.problem = not problem, problem

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._interval_s)


def _problem(exc: BaseException) -> str:
    return f"PostgreSQL does not answer ({type(exc).__name__})"
