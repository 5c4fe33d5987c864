"""The whole system on one machine: nats-server plus every service as its own process."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from glyphoxa_cli.processes import SERVICES, NatsServer, ServiceProcess

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
    nats: NatsServer | None = None
    procs: list[ServiceProcess] = field(default_factory=list)

    def start(self, progress=print) -> Stack:  # type: ignore[no-untyped-def]
        self.home.mkdir(parents=True, exist_ok=True)
        if self.nats_url is None:
            self.nats = NatsServer(self.home / "nats").start()
            self.nats_url = self.nats.url
            progress(f"nats-server with JetStream on {self.nats_url}")
        env = {"NATS_URL": self.nats_url, "GLYPHOXA_HOME": str(self.home), **self.env}
        for service in self.services:
            for i in range(self.replicas.get(service, 1)):
                name = f"{service}-{i + 1}"
                proc = ServiceProcess(service, {**env, "SERVICE_REPLICA": name},
                                      self.home / "logs" / f"{name}.log", name=name)
                self.procs.append(proc.start())
        t0 = time.monotonic()
        for proc in self.procs:
            proc.wait_ready()
            progress(f"  {proc.name:<18} ready (metrics :{proc.metrics_port}, log {proc.log_path})"
                     f"  [{time.monotonic() - t0:.1f} s]")
        self._write_state()
        return self

    def _write_state(self) -> None:
        state = {"nats_url": self.nats_url, "nats_pid": self.nats.proc.pid if self.nats and self.nats.proc else None,
                 "services": [{"name": p.name, "pid": p.proc.pid if p.proc else None,
                               "metrics_port": p.metrics_port, "log": str(p.log_path)} for p in self.procs]}
        (self.home / "stack.json").write_text(json.dumps(state, indent=2))

    def by_name(self, name: str) -> ServiceProcess:
        return next(p for p in self.procs if p.name == name)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self.nats is not None:
            self.nats.stop()
        (self.home / "stack.json").unlink(missing_ok=True)

    def logs(self) -> dict[str, str]:
        return {p.name: p.log_path.read_text(errors="replace") if p.log_path.exists() else ""
                for p in self.procs}


def running_nats_url() -> str | None:
    state = glyphoxa_home() / "stack.json"
    if state.exists():
        return json.loads(state.read_text()).get("nats_url")
    return None
