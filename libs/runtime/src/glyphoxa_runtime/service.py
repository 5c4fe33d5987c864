"""The life of a service process: logs, metrics/health endpoint, NATS, signals, drain.

SIGTERM/SIGINT: stop taking work, hand back claims, drain the connection with a
deadline, exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from nats.aio.client import Client
from prometheus_client import Counter, Gauge

from glyphoxa_bus.claims import CLAIM_RESULTS, ClaimWorker
from glyphoxa_bus.connection import connect
from glyphoxa_bus.heartbeat import HeartbeatPublisher
from glyphoxa_bus.publisher import Publisher
from glyphoxa_bus.session import SessionContext, SessionHandler, serve_session_durably
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_runtime import gcpause, tracing
from glyphoxa_runtime.health_metrics import export_readiness
from glyphoxa_runtime.http import HealthServer
from glyphoxa_runtime.logs import register_secret, setup_logging
from glyphoxa_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)


class App(Protocol):
    async def run(self) -> None: ...

    async def shutdown(self) -> None: ...

    def readiness(self) -> dict[str, object]: ...


def replica_name(settings: ServiceSettings, service: str) -> str:
    return settings.replica or f"{service}-{socket.gethostname()}-{os.getpid()}"


def serve(service: str, settings: ServiceSettings,
          build: Callable[[Client, Publisher], Awaitable[App]]) -> NoReturn:
    """A service's ``main``: run it and exit with its status (0 only after a clean stop), so
    a supervisor (compose ``restart: on-failure``, Kubernetes) sees a crash as one."""
    raise SystemExit(asyncio.run(run_service(service, settings, build)))


async def run_service(
    service: str,
    settings: ServiceSettings,
    build: Callable[[Client, Publisher], Awaitable[App]],
) -> int:
    """Run until SIGTERM/SIGINT (0) or until the app fails or stops on its own (1)."""
    setup_logging(service, settings.log_level)
    for secret in settings.nats.credentials():  # nats://user:password@host, nats://token@host
        register_secret(secret)
    register_secret(settings.nats.password.get_secret_value())
    register_secret(settings.nats.secrets_key.get_secret_value())
    register_secret(settings.nats.edge_key.get_secret_value())
    replica = replica_name(settings, service)
    traces = tracing.setup(service, settings.tracing, instance=replica)
    nc = await connect(settings.nats, name=replica)
    publisher = Publisher(nc, settings.nats.max_in_flight)
    app = await build(nc, publisher)
    state = lambda: readiness(service, replica, nc, app)  # noqa: E731
    health = HealthServer(settings.metrics.host, settings.metrics.port, state)
    unexport = export_readiness(service, state)
    await health.start()
    gcpause.watch_gc()
    frozen = gcpause.settle_heap()  # start-up is done: later full collections skip it
    log.info("service started", extra={"replica": replica, "metrics_port": health.port,
                                        "nats": settings.nats.shown(), "heap_frozen": frozen})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(app.run(), name=f"{service}-run")
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if runner in done:
        status = 1
        if runner.exception() is not None:
            log.error("service failed", exc_info=runner.exception())
        else:
            log.error("service stopped on its own, without being asked to")
    log.info("shutting down")
    with contextlib.suppress(Exception):
        await asyncio.wait_for(app.shutdown(), timeout=settings.nats.drain_timeout_s)
    runner.cancel()
    stopper.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await runner
    with contextlib.suppress(Exception):
        await asyncio.wait_for(publisher.flush(), timeout=settings.nats.drain_timeout_s)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.drain(), timeout=settings.nats.drain_timeout_s)
    await health.stop()
    unexport()
    with contextlib.suppress(Exception):  # the spans of the last turns
        await traces.shutdown(timeout_s=settings.nats.drain_timeout_s)
    log.info("stopped", extra={"status": status})
    return status


def readiness(service: str, replica: str, nc: Client, app: App) -> dict[str, object]:
    """``/readyz``: the app's own state, and never ready while NATS is unreachable (a
    supervisor or load balancer must see the outage; the client reconnects by itself)."""
    state: dict[str, object] = {"service": service, "replica": replica,
                                "nats": nc.is_connected, **app.readiness()}
    if not nc.is_connected:
        state["ready"] = False
        state["problem"] = "NATS is unreachable (reconnecting)"
    return state


@dataclass
class StageMetrics:
    service: str
    sessions: Gauge = field(init=False)
    rejected: Counter = field(init=False)
    claims: Counter = field(init=False)
    capacity: Gauge = field(init=False)

    def __post_init__(self) -> None:
        svc = self.service.replace("-", "_")
        self.sessions = Gauge(f"glyphoxa_{svc}_sessions_active", "sessions this replica serves")
        self.rejected = Counter(
            f"glyphoxa_{svc}_rejected_messages_total",
            "messages rejected (malformed, oversized, invalid token, bad audio)",
            ["stage", "reason"],
        )
        self.claims = Counter(
            f"glyphoxa_{svc}_claims_total",
            "session claims by what became of them: taken, done (session ended), failed "
            "(handed back after a runner error), lost (stalled past the lease), handed_back "
            "(SIGTERM)", ["result"])
        for result in CLAIM_RESULTS:
            self.claims.labels(result=result)
        self.capacity = Gauge(f"glyphoxa_{svc}_capacity",
                              "sessions this replica takes at most (<STAGE>_CAPACITY)")


HandlerFactory = Callable[[SessionContext], SessionHandler]


class StageApp:
    """A stage replica: claims sessions, serves each with a fresh handler and keeps a
    heartbeat listing them (``glyphoxa_bus.heartbeat``)."""

    def __init__(
        self,
        nc: Client,
        publisher: Publisher,
        settings: ServiceSettings,
        stage: str,
        input_stream: str,
        input_filters: Callable[[SessionSubjects], list[str]],
        handler_factory: HandlerFactory,
        metrics: StageMetrics,
        capacity: int = 8,
    ):
        self._nc, self._publisher = nc, publisher
        self._stage, self._stream = stage, input_stream
        self._filters, self._factory = input_filters, handler_factory
        self.metrics = metrics
        self._lease_s = settings.nats.claim_lease_s
        self.worker = ClaimWorker(
            nc, stage, self._serve, capacity=capacity, lease_s=settings.nats.claim_lease_s,
            on_change=self._sessions_changed, rejected=metrics.rejected,
            on_claim=lambda result: metrics.claims.labels(result=result).inc(),
        )
        metrics.capacity.set(capacity)
        self.heartbeat = HeartbeatPublisher(
            nc, stage, replica_name(settings, stage), self._session_refs,
            interval_s=settings.nats.heartbeat_interval_s, ttl_s=settings.nats.heartbeat_ttl_s,
            capacity=capacity,
        )

    def _sessions_changed(self, count: int) -> None:
        self.metrics.sessions.set(count)
        self.heartbeat.poke()

    def _session_refs(self) -> list[str]:
        return [f"{s.tenant}.{s.session}" for s in self.worker.sessions]

    async def _serve(self, subjects: SessionSubjects) -> None:
        def new_context() -> SessionContext:
            return SessionContext(self._stage, subjects, self._nc, self._publisher,
                                  metrics_rejected=self.metrics.rejected,
                                  stall_limit_s=self._lease_s)

        await serve_session_durably(new_context, self._factory, self._stream,
                                    self._filters(subjects))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.heartbeat.run(), name=f"{self._stage}-heartbeat")
            tasks.create_task(self.worker.run(), name=f"{self._stage}-claims")

    async def shutdown(self) -> None:
        try:
            await self.worker.shutdown()
        finally:
            await self.heartbeat.stop()

    def readiness(self) -> dict[str, object]:
        return {"ready": True, "stage": self._stage,
                "sessions": [f"{s.tenant}/{s.session}" for s in self.worker.sessions]}
