"""session-control as a real process for tests: its own PostgreSQL database, keys made up
per test, and admin API clients for the operator and for tenants."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest

from glyphoxa_bus.heartbeat import HeartbeatPublisher
from glyphoxa_cli.admin import AdminClient
from glyphoxa_cli.processes import ServiceProcess, free_port
from glyphoxa_events.subjects import STAGES
from glyphoxa_session_control.crypto import new_secret_key

EXAMPLE_CAMPAIGN = """\
name: Forge
npcs:
  - name: Greta
    aliases: [Smith]
    persona: A blacksmith who sells swords.
  - name: Tobias
    persona: The innkeeper.
"""

# heartbeats as fast as the liveness tests' session-control expects them
# (NATS_HEARTBEAT_INTERVAL_S=0.3, NATS_HEARTBEAT_TTL_S=1.0)
BEAT = {"interval_s": 0.3, "ttl_s": 1.0}


@dataclass
class ControlProcess:
    nats_url: str
    pg_dsn: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    operator_key: str = field(default_factory=lambda: "op-" + secrets.token_urlsafe(24))
    secret_key: str = field(default_factory=new_secret_key)
    api_port: int = field(default_factory=free_port)
    proc: ServiceProcess | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout_s: float = 30.0) -> ControlProcess:
        self.proc = ServiceProcess("session-control", {
            "NATS_URL": self.nats_url, "PG_DSN": self.pg_dsn,
            "SESSION_CONTROL_API_PORT": str(self.api_port),
            "SESSION_CONTROL_OPERATOR_KEY": self.operator_key,
            "SESSION_CONTROL_SECRET_KEYS": self.secret_key, **self.env}, self.log_path).start()
        self.proc.wait_ready(timeout_s)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill9()

    def restart(self) -> ControlProcess:
        """A new process on the same port, database and keys."""
        self.stop()
        return self.start()

    def operator(self) -> AdminClient:
        return AdminClient(self.api_url, self.operator_key)

    async def new_tenant(self, tenant: str, campaign_yaml: str | None = EXAMPLE_CAMPAIGN,
                         **body: object) -> AdminClient:
        """Create ``tenant`` (with ``body``: tier, guilds, bot token), return a client holding a
        fresh API key of it, with the example campaign imported."""
        async with self.operator() as op:
            await op.call("POST", "/v1/tenants", json={"id": tenant, "name": f"Table {tenant}", **body})
            key = await op.create_api_key(tenant, "tests")
        client = AdminClient(self.api_url, key)
        if campaign_yaml:
            await client.import_campaign(campaign_yaml)
        return client


def module_control(name: str, env: dict[str, str] | None = None
                   ) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``control, nc = module_control("edge", {...})`` in a test module: one session-control
    process for the module's tests (on the module's own NATS server), and a NATS client of
    that server per test."""

    @pytest.fixture(scope="module")
    def control(module_nats_url: str, pg_dsn: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlProcess]:
        proc = ControlProcess(module_nats_url, pg_dsn, tmp_path_factory.mktemp(name) / "sc.log",
                              env=dict(env or {})).start()
        try:
            yield proc
        finally:
            proc.stop()

    @pytest.fixture
    async def nc(control: ControlProcess) -> AsyncIterator[nats.NATS]:
        client = await nats.connect(control.nats_url)
        yield client
        await client.drain()

    return control, nc


@contextlib.asynccontextmanager
async def holders(nc, sessions: list[str], roles=(*STAGES, "edge"), name="r1"):  # type: ignore[no-untyped-def]
    """Heartbeats of one replica per role, all holding ``sessions``; yields {role: task} so a
    test can kill one (cancel without deleting its key, as a crash would)."""
    pubs = {role: HeartbeatPublisher(nc, role, f"{role}-{name}", lambda: list(sessions), **BEAT)
            for role in roles}
    tasks = {role: asyncio.create_task(p.run()) for role, p in pubs.items()}
    try:
        yield tasks
    finally:
        for role, task in tasks.items():
            if not task.done():
                await pubs[role].stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
