"""The whole system on one machine: nats-server, PostgreSQL and every service as its own
process.

The operator key and the key that encrypts secrets at rest are made on first start and kept
in ``<home>/keys.json`` (mode 0600), so stored bot tokens stay readable across restarts.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from glyphoxa_bus.auth import OPERATOR, complete_passwords, server_config_for
from glyphoxa_cli.postgres import PostgresServer, create_database
from glyphoxa_cli.processes import SERVICES, NatsServer, ServiceProcess, free_port
from glyphoxa_runtime.keyring import complete, service_keys, write_private

STAGE_SERVICES = ("vad", "stt", "npc-brain", "tts")


def glyphoxa_home() -> Path:
    return Path(os.environ.get("GLYPHOXA_HOME", ".glyphoxa")).resolve()


@dataclass
class Stack:
    home: Path
    env: dict[str, str] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    nats_url: str | None = None  # use an existing server instead of starting one
    services: tuple[str, ...] = SERVICES
    pg_dsn: str | None = None  # use an existing database instead of starting PostgreSQL
    api_port: int = 0
    nats: NatsServer | None = None
    postgres: PostgresServer | None = None
    procs: list[ServiceProcess] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def keys(self) -> dict[str, str]:
        return stack_keys(self.home)

    def start(self, progress=print) -> Stack:  # type: ignore[no-untyped-def]
        """Start everything; if any part fails to come up, stop what did and re-raise."""
        try:
            return self._start(progress)
        except BaseException:
            self.stop()
            raise

    def _start(self, progress) -> Stack:  # type: ignore[no-untyped-def]
        self.home.mkdir(parents=True, exist_ok=True)
        logins: dict[str, str] = {}  # service -> password, where the stack's nats-server logs in
        if self.nats_url is None:
            logins = nats_passwords(self.home)
            auth = self.home / "nats" / "auth.conf"
            write_private(auth, server_config_for(logins))
            self.nats = NatsServer(self.home / "nats", config=auth).start()
            progress(f"nats-server with JetStream on {self.nats.url} (a user per service)")
            self.nats_url = self.nats.url_for(OPERATOR, logins[OPERATOR])
            # the streams exist before any service logs in: a stage may not declare them,
            # and a stack need not run session-control (benchmarks)
            declare_streams(self.nats_url, self.env)
        else:  # an existing server: say at once when it does not answer, not after every
            # service waited two minutes for it
            progress(f"using NATS at {reach_nats(self.nats_url)}")
        if self.pg_dsn is None:
            self.postgres = PostgresServer(self.home / "postgres").start()
            create_database(self.postgres.dsn(), "glyphoxa")
            self.pg_dsn = self.postgres.dsn("glyphoxa")
            progress(f"PostgreSQL 18 on 127.0.0.1:{self.postgres.port} (data {self.postgres.data_dir})")
        self.api_port = self.api_port or free_port()
        keys = self.keys()
        env = {"NATS_URL": self.nats.url if self.nats else self.nats_url,
               "GLYPHOXA_HOME": str(self.home), "PG_DSN": self.pg_dsn,
               "SESSION_CONTROL_API_PORT": str(self.api_port)}
        for service in self.services:
            login = ({"NATS_USER": service, "NATS_PASSWORD": logins[service]} if logins else {})
            service_env = {**env, **service_keys(service, keys), **login, **self.env}
            for i in range(self.replicas.get(service, 1)):
                name = f"{service}-{i + 1}"
                proc = ServiceProcess(service, {**service_env, "SERVICE_REPLICA": name},
                                      self.home / "logs" / f"{name}.log", name=name)
                self.procs.append(proc.start())
        t0 = time.monotonic()
        for proc in self.procs:
            proc.wait_ready()
            progress(f"  {proc.name:<18} ready (metrics :{proc.metrics_port}, log {proc.log_path})"
                     f"  [{time.monotonic() - t0:.1f} s]")
        self.write_state()
        return self

    def write_state(self) -> None:
        state = {"nats_url": self.nats_url, "nats_pid": self.nats.proc.pid if self.nats and self.nats.proc else None,
                 "api_url": self.api_url,
                 "postgres_pid": self.postgres.proc.pid if self.postgres and self.postgres.proc else None,
                 "services": [{"name": p.name, "pid": p.proc.pid if p.proc else None,
                               "metrics_port": p.metrics_port, "log": str(p.log_path)} for p in self.procs]}
        # the operator's NATS login is in nats_url: the file is its owner's only
        write_private(self.home / "stack.json", json.dumps(state, indent=2))

    def by_name(self, name: str) -> ServiceProcess:
        return next(p for p in self.procs if p.name == name)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()
        (self.home / "stack.json").unlink(missing_ok=True)

    def logs(self) -> dict[str, str]:
        return {p.name: p.log_path.read_text(errors="replace") if p.log_path.exists() else ""
                for p in self.procs}


class StackFileError(ValueError):
    """A file the local stack keeps in its home that cannot be read (a command says so in one
    line rather than a traceback)."""


def read_stack_file(path: Path, what: str) -> dict | None:  # type: ignore[type-arg]
    """``path``'s JSON object, or None when there is no such file."""
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StackFileError(f"{path} ({what}) cannot be read: {exc}") from None
    if not isinstance(doc, dict):
        raise StackFileError(f"{path} ({what}) is not a JSON object")
    return doc


def stack_keys(home: Path) -> dict[str, str]:
    """The local stack's keys (``glyphoxa_runtime.keyring``) and the tenant keys the scene
    player made; made once, kept 0600 in ``<home>/keys.json``."""
    keys = read_stack_file(home / "keys.json", "the local stack's keys") or {"tenant_keys": {}}
    if complete(keys):  # a new home, or a keys.json from before a key was needed
        _write_keys(home, keys)
    return keys


def declare_streams(nats_url: str, env: dict[str, str]) -> None:
    """Declare the streams and the heartbeat bucket (with the TTL the services are given in
    ``env``) as the operator, in a thread of its own: the caller may be in an event loop."""
    from glyphoxa_bus.connection import BusSettings, connect
    from glyphoxa_bus.streams import ensure_heartbeat_bucket

    settings = BusSettings.model_validate({
        "url": nats_url, **{name: env[f"NATS_{name.upper()}"] for name in
                            ("heartbeat_ttl_s", "stream_replicas", "stream_max_bytes",
                             "stream_max_age_s")
                            if f"NATS_{name.upper()}" in env}})

    async def declare() -> None:
        nc = await connect(settings, name="glyphoxa-up")
        try:
            await ensure_heartbeat_bucket(nc.jetstream(), settings.heartbeat_ttl_s,
                                          replicas=settings.stream_replicas)
        finally:
            await nc.close()

    _run_in_thread(declare(), "declare-streams")


REACH_NATS_S = 10.0


class NatsUnreachable(ConnectionError):
    """``up --nats URL`` named a server that does not answer."""


def reach_nats(nats_url: str) -> str:
    """Connect to an existing NATS once (``REACH_NATS_S`` at most) and hang up; the URL as
    it may be shown (no password). Raises ``NatsUnreachable``."""
    from glyphoxa_bus.connection import BusSettings, connect, shown_url

    try:
        settings = BusSettings(url=nats_url)
    except ValueError as exc:
        raise NatsUnreachable(f"not a NATS URL: {exc}") from None
    shown = shown_url(nats_url)

    async def reach() -> None:
        nc = await connect(settings, name="glyphoxa-up", declare=False,
                           first_connect_s=REACH_NATS_S)
        await nc.close()

    try:
        _run_in_thread(reach(), "reach-nats")
    except (OSError, ValueError) as exc:
        raise NatsUnreachable(f"cannot reach NATS at {shown}: {exc}") from None
    return shown


def _run_in_thread(coro, name: str) -> None:  # type: ignore[no-untyped-def]
    """Run ``coro`` to its end in a thread of its own (the caller may be in an event loop);
    its exception is raised here."""
    import asyncio
    import threading

    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def nats_passwords(home: Path) -> dict[str, str]:
    """The passwords of the stack's NATS users (ADR 0006), made once, kept in keys.json."""
    keys = stack_keys(home)
    passwords = keys.setdefault("nats", {})
    if complete_passwords(passwords):
        _write_keys(home, keys)
    return dict(passwords)


def save_tenant_key(home: Path, tenant: str, key: str) -> None:
    keys = stack_keys(home)
    keys.setdefault("tenant_keys", {})[tenant] = key
    _write_keys(home, keys)


def _write_keys(home: Path, keys: dict) -> None:  # type: ignore[type-arg]
    write_private(home / "keys.json", json.dumps(keys))


def running_stack() -> dict:
    return read_stack_file(glyphoxa_home() / "stack.json", "the running local stack") or {}


def running_nats_url() -> str | None:
    return running_stack().get("nats_url")
