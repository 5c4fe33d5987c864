"""The composed stack (compose.yaml) seen from the host, through ``docker compose``: its
published NATS and admin API ports, and the operator key read from session-control's
secrets directory (never written anywhere by us).

The operator's NATS login (docs/adr/0006) is read in the one-shot ``keys`` service's volume.

The project is compose.yaml's (``GLYPHOXA_PROJECT``, default ``glyphoxa``); ``.env`` beside
compose.yaml is read by docker compose itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from glyphoxa_bus.auth import OPERATOR

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "compose.yaml"
SECRETS_DIR = "/run/glyphoxa/secrets"
KEYRING_DIR = "/run/glyphoxa/keyring"  # the keys service's view of every secrets volume
NATS_PORT, API_PORT = 4222, 8700


class ComposeError(RuntimeError):
    """docker compose is missing, failed, or the stack is not up."""


@dataclass
class ComposeStack:
    project: str | None = None  # compose.yaml's name (GLYPHOXA_PROJECT) when None
    env: dict[str, str] = field(default_factory=dict)  # added to docker compose's environment
    file: Path = COMPOSE_FILE
    overrides: tuple[Path, ...] = ()  # more compose files merged over it, in order (-f)
    _nats_password: str | None = field(default=None, repr=False)

    def command(self, *args: str) -> list[str]:
        docker = shutil.which("docker")
        if docker is None:
            raise ComposeError("docker is not installed (docs/deploy.md, requirements)")
        project = ["-p", self.project] if self.project else []
        files = [arg for f in (self.file, *self.overrides) for arg in ("-f", str(f))]
        return [docker, "compose", *files, "--project-directory", str(self.file.parent),
                *project, *args]

    def run(self, *args: str, timeout_s: float | None = None, capture: bool = True
            ) -> subprocess.CompletedProcess[str]:
        """``docker compose ARGS``; raises ComposeError with its output when it fails."""
        env = {**os.environ, **self.env}
        try:
            done = subprocess.run(self.command(*args), env=env, text=True, timeout=timeout_s,
                                  capture_output=capture, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ComposeError(f"docker compose {' '.join(args)} took over {timeout_s:.0f} s"
                               ) from exc
        if done.returncode != 0:
            detail = (done.stderr or done.stdout or "").strip()[-2000:] if capture else ""
            raise ComposeError(f"docker compose {' '.join(args)} failed "
                               f"(exit {done.returncode}){': ' + detail if detail else ''}")
        return done

    def published(self, service: str, port: int) -> tuple[str, int]:
        """Where the host reaches ``service``'s ``port`` (``docker compose port``)."""
        out = self.run("port", service, str(port)).stdout.strip()
        host, _, published = out.rpartition(":")
        if not published.isdigit():
            raise ComposeError(f"{service} publishes no port {port}: is the stack up? "
                               "(./task compose-up)")
        return (host if host not in ("", "0.0.0.0", "::", "[::]") else "127.0.0.1",
                int(published))

    def nats_url(self) -> str:
        """The published NATS port, logged in as the operator (docs/adr/0006)."""
        host, port = self.published("nats", NATS_PORT)
        return f"nats://{OPERATOR}:{quote(self.nats_password(), safe='')}@{host}:{port}"

    def nats_password(self) -> str:
        """The operator's NATS password, read in the one-shot ``keys`` service's volume
        (no running service mounts it)."""
        if self._nats_password is None:
            value = self.run("run", "--rm", "--no-deps", "-T", "--entrypoint", "cat", "keys",
                             f"{KEYRING_DIR}/{OPERATOR}/NATS_PASSWORD").stdout.strip()
            if not value:
                raise ComposeError("the keys volume has no operator NATS password: has the "
                                   "stack been started (./task compose-up)?")
            self._nats_password = value
        return self._nats_password

    def api_url(self) -> str:
        host, port = self.published("session-control", API_PORT)
        return f"http://{host}:{port}"

    def secret(self, name: str, service: str = "session-control") -> str:
        """One of ``service``'s keys, read inside its container."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a variable name: {name!r}")
        value = self.run("exec", "-T", service, "cat", f"{SECRETS_DIR}/{name}").stdout.strip()
        if not value:
            raise ComposeError(f"{service} has no {name} in {SECRETS_DIR}")
        return value

    def operator_key(self) -> str:
        return self.secret("SESSION_CONTROL_OPERATOR_KEY")

    def containers(self, service: str) -> list[str]:
        """The ids of ``service``'s running containers (its replicas)."""
        return self.run("ps", "-q", service).stdout.split()
