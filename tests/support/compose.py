"""Compose stacks for tests: whether Docker answers, the images built once per run, a stack
of a test module's own (its own project name, so concurrent runs never meet), and the
replica of a stage that holds a session.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from glyphoxa_cli.compose import ComposeError, ComposeStack
from glyphoxa_events.subjects import SessionSubjects

LOCAL_BASE = "glyphoxa/base:bookworm"  # ./task docker-here builds it where no registry answers
TAG = "e2e"


def docker_problem() -> str | None:
    """Why a compose test cannot run here, or None."""
    import shutil

    if shutil.which("docker") is None:
        return "no docker CLI"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=15)
        compose = subprocess.run(["docker", "compose", "version"], capture_output=True,
                                 text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer within 15 s"
    if info.returncode != 0:
        return "no Docker engine answers (./task docker-here starts one on Debian)"
    if compose.returncode != 0:
        return "docker compose v2 is not installed"
    return None


@dataclass(frozen=True)
class Images:
    """compose.yaml's images, tagged ``TAG``, and how long building them took."""

    env: dict[str, str]  # what every test stack's docker compose needs to find them
    build_s: float


def build_images() -> Images:
    """``docker compose build`` once; skips the test, saying why, where Docker is missing."""
    problem = docker_problem()
    if problem:
        pytest.skip(f"compose e2e skipped: {problem}")
    env = {"GLYPHOXA_TAG": TAG}
    if subprocess.run(["docker", "image", "inspect", LOCAL_BASE],
                      capture_output=True).returncode == 0:
        env["GLYPHOXA_BASE_IMAGE"] = LOCAL_BASE
    t0 = time.monotonic()
    ComposeStack(env=env).run("build", timeout_s=3600)
    return Images(env=env, build_s=time.monotonic() - t0)


def free_port() -> int:
    """A port free on the host now: for a service that is restarted during a test, whose
    published port must not change (an ephemeral one would)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def project(images: Images, name: str, request: pytest.FixtureRequest, logs_to: Path,
            overrides: tuple[Path, ...] = (), fixed_ports: bool = False
            ) -> Iterator[ComposeStack]:
    """A compose project of the calling fixture's own, taken down (volumes too) afterwards.
    Where a test under it failed, its last log lines are written to ``logs_to`` and printed.
    ``fixed_ports``: NATS and the API on ports picked now, not ephemeral ones, so a container
    started again (``docker start``) is found where it was."""
    ports = ({"GLYPHOXA_NATS_PORT": str(free_port()), "GLYPHOXA_API_PORT": str(free_port())}
             if fixed_ports else {"GLYPHOXA_NATS_PORT": "0", "GLYPHOXA_API_PORT": "0"})
    stack = ComposeStack(env={**images.env, "GLYPHOXA_NATS_MONITOR_PORT": "0", **ports,
                              "GLYPHOXA_PROJECT": f"glyphoxa-{name}-{uuid.uuid4().hex[:8]}"},
                         overrides=overrides)
    failed_before = request.session.testsfailed
    try:
        yield stack
    finally:
        if request.session.testsfailed > failed_before or sys.exc_info()[0] is not None:
            logs = subprocess.run(stack.command("logs", "--no-color", "--tail", "80"),
                                  capture_output=True, text=True,
                                  env={**os.environ, **stack.env})
            logs_to.write_text(logs.stdout + logs.stderr)
            print(f"compose logs: {logs_to}\n{logs.stdout[-6000:]}")
        with contextlib.suppress(ComposeError):
            stack.run("down", "--volumes", "--remove-orphans", timeout_s=300)


def holder_of(stack: ComposeStack, service: str, subjects: SessionSubjects) -> str | None:
    """The container of ``service`` whose replica holds the session (its /readyz lists it)."""
    for container in stack.containers(service):
        probe = subprocess.run(["docker", "exec", container, "python", "-m",
                                "glyphoxa_runtime.probe", "readyz"], capture_output=True, text=True)
        if probe.returncode != 0:
            continue
        with contextlib.suppress(ValueError):
            if f"{subjects.tenant}/{subjects.session}" in json.loads(probe.stdout).get(
                    "sessions", []):
                return container
    return None


def signal_service(container: str, signal: str) -> None:
    """Send ``signal`` to the service's processes inside ``container`` (all of its user's
    but PID 1, tini): ``KILL`` is a crash as the OOM killer makes one (tini then exits 137
    and ``restart: on-failure`` starts the container again), ``STOP``/``CONT`` pause it."""
    subprocess.run(["docker", "exec", container, "sh", "-c", f"kill -{signal} -1"],
                   capture_output=True, timeout=30)


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ComposeError(f"docker {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout
