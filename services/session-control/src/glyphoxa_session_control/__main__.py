"""session-control: the system of record (PostgreSQL), the admin HTTP API, the bus API
``glxapi.session.*``, session liveness, and the recorder of usage, turns and transcripts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Iterator
from importlib.resources import files

import uvicorn
from nats.aio.client import Client

from glyphoxa_bus.heartbeat import HeartbeatView
from glyphoxa_bus.publisher import Publisher
from glyphoxa_events.api import EdgeChanged
from glyphoxa_events.subjects import api_subject
from glyphoxa_memory import EmbedderUnavailable, make_embedder
from glyphoxa_pg.migrations import load_migrations, migrate
from glyphoxa_pg.pool import PgHealth, dsn_password, open_pool
from glyphoxa_runtime.logs import register_secret
from glyphoxa_runtime.service import serve
from glyphoxa_runtime.settings import load_settings
from glyphoxa_session_control.api import Control, create_app
from glyphoxa_session_control.availability import Availability
from glyphoxa_session_control.campaigns import Campaigns
from glyphoxa_session_control.config import Settings
from glyphoxa_session_control.crypto import SecretBox, SecretKeyError
from glyphoxa_session_control.gm import GameMaster
from glyphoxa_session_control.lifecycle import Sessions
from glyphoxa_session_control.liveness import Watchdog
from glyphoxa_session_control.memory import Embedder, MemoryIndexer
from glyphoxa_session_control.nats_api import NatsApi
from glyphoxa_session_control.recall import RecallService, open_recall_pool
from glyphoxa_session_control.recaps import RecapQueue
from glyphoxa_session_control.recorder import Recorder
from glyphoxa_session_control.registry import LiveRegistry
from glyphoxa_session_control.reports import Reports
from glyphoxa_session_control.streamwatch import StreamWatch
from glyphoxa_session_control.tenants import Tenants
from glyphoxa_session_control.timeline import Timelines

log = logging.getLogger("glyphoxa.session_control")


class _ApiServer(uvicorn.Server):
    """uvicorn inside our own event loop: signals belong to ``run_service``, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class SessionControlApp:
    def __init__(self, control: Control, nats_api: NatsApi, recorder: Recorder, settings: Settings,
                 streams: StreamWatch, memory: Memory):
        self.control, self._nats_api, self._recorder = control, nats_api, recorder
        self._streams, self._memory = streams, memory
        self._pg = control.availability.pg
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says
        # TCP, and without it every keep-alive response waits ~40 ms for Nagle
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.api_host, settings.api_port))
        self._socket, self.api_port = sock, sock.getsockname()[1]
        self._tasks: list[asyncio.Task] = []
        self._server = _ApiServer(uvicorn.Config(
            create_app(control), log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=3))

    async def run(self) -> None:
        await self._nats_api.start()
        log.info("admin API listening", extra={"api_port": self.api_port})
        async with asyncio.TaskGroup() as group:
            self._tasks = [
                group.create_task(self._server.serve(sockets=[self._socket]), name="admin-api"),
                group.create_task(self.control.watchdog.run(), name="liveness"),
                group.create_task(self._recorder.run(), name="recorder"),
                group.create_task(self._pg.run(), name="pg-health"),
                group.create_task(self._streams.run(), name="stream-watch"),
                group.create_task(self._memory.run(), name="memory"),
            ]

    async def shutdown(self) -> None:
        """Stop taking requests, let the API answer what it has, stop the loops, close PG."""
        await self._nats_api.stop()
        self._server.should_exit = True
        for task in self._tasks[1:]:
            task.cancel()
        await self._memory.close()
        await asyncio.wait(self._tasks, timeout=5)
        await self.control.pool.close(timeout=2)

    def readiness(self) -> dict[str, object]:
        state: dict[str, object] = {
            "ready": self._nats_api.ready and self._server.started and self._pg.ok,
            "api_port": self.api_port, "postgres": self._pg.ok}
        if self._pg.problem:
            state["problem"] = self._pg.problem
        return state


class Memory:
    """Campaign memory's background work (docs/adr/0007): the indexer that embeds what the
    recorder stored, and the recaps of ended sessions."""

    def __init__(self, indexer: MemoryIndexer | None, recaps: RecapQueue, embedder: Embedder | None,
                 recall: RecallService | None = None):
        self.indexer, self.recaps, self._embedder = indexer, recaps, embedder
        self._recall = recall

    async def run(self) -> None:
        self.recaps.start()
        if self.indexer is not None:
            await self.indexer.run()
        else:
            await asyncio.Event().wait()  # until cancelled

    async def close(self) -> None:
        if self.indexer is not None:
            await self.indexer.close()
        await self.recaps.close()
        if self._recall is not None:
            await self._recall.close()
        if self._embedder is not None:
            await self._embedder.close()


async def build(settings: Settings, nc: Client, publisher: Publisher) -> SessionControlApp:
    box = SecretBox(settings.secret_keys.get_secret_value())  # fails early on a bad key
    embedder = make_embedder(settings.memory)  # a model that does not verify stops us here
    pool = await open_pool(settings.pg, "session-control")
    async with pool.connection() as conn:
        applied = await migrate(conn, load_migrations(files("glyphoxa_session_control") / "migrations"))
    if applied:
        log.info("database migrated", extra={"versions": applied})
    availability = Availability(PgHealth(pool), nc)
    campaigns = Campaigns(pool, settings.allow_fake_providers)
    sessions = Sessions(pool, nc, publisher, campaigns, await LiveRegistry.open(
        nc, settings.nats.stream_replicas))
    counts = await sessions.reconcile()
    log.info("reconciled live sessions", extra=counts)
    watchdog = Watchdog(sessions, HeartbeatView(nc.jetstream(), settings.nats.heartbeat_ttl_s),
                        availability, settings.liveness_grace_s, settings.ending_timeout_s,
                        settings.liveness_interval_s, settings.nats.heartbeat_ttl_s)

    async def edge_changed(edge: str) -> None:
        """Tell that edge its bots changed (no secret in the message: it asks again)."""
        await nc.publish(api_subject("edge.changed"),
                         EdgeChanged(edge=edge).model_dump_json().encode())

    tenants = Tenants(pool, box, edge_changed)
    gm = GameMaster(pool, sessions, tenants, publisher)
    reports = Reports(pool, sessions)
    control = Control(pool=pool, tenants=tenants, campaigns=campaigns, sessions=sessions, gm=gm,
                      reports=reports, timelines=Timelines(nc.jetstream(), sessions, reports),
                      watchdog=watchdog, availability=availability,
                      operator_key=settings.operator_key.get_secret_value(),
                      max_request_bytes=settings.max_request_bytes)
    recall = RecallService(pool, embedder, own=await open_recall_pool(settings.pg)
                           if embedder is not None else None)
    nats_api = NatsApi(nc, sessions, control.tenants, gm, campaigns, availability,
                       settings.nats.secrets_key.get_secret_value(),
                       settings.nats.edge_key.get_secret_value(),
                       trust_anonymous=not settings.nats.user, recall=recall)
    memory = Memory(MemoryIndexer(pool, embedder, first=recall.first) if embedder is not None
                    else None,
                    RecapQueue(nc, pool, retry_s=settings.recap_retry_s), embedder, recall)
    log.info("campaign memory", extra={"embedder": embedder.name if embedder else "off"})
    return SessionControlApp(control, nats_api, Recorder(nc, pool), settings, StreamWatch(nc),
                             memory)


def main() -> None:
    settings = load_settings(Settings, "session-control")
    try:
        SecretBox(settings.secret_keys.get_secret_value())
    except SecretKeyError as exc:
        print(f"session-control: invalid configuration:\n  {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for secret in (settings.operator_key.get_secret_value(), dsn_password(settings.pg.dsn.get_secret_value()),
                   *settings.secret_keys.get_secret_value().split(",")):
        register_secret(secret.strip() if secret else None)
    register_secret(settings.memory.gemini_api_key.get_secret_value() or None)
    try:
        serve("session-control", settings, lambda nc, publisher: build(settings, nc, publisher))
    except EmbedderUnavailable as exc:
        print(f"session-control: campaign memory cannot start: {exc}\n  (reinstall the named "
              "package, or set MEMORY_EMBEDDER=off to run without recall)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
