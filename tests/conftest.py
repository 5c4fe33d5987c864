"""Shared fixtures: a real nats-server per test session (or NATS_URL), unique names per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real JetStream server of this test's own on an ephemeral port (~0.1 s to start), so
    no claim or stream state leaks between tests; ``NATS_URL`` uses an existing server."""
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
