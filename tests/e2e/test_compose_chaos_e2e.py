"""Chaos under ``docker compose``: the chaos suite's faults (test_chaos_e2e.py) dealt to the
composed stack, its containers killed the way a host or the kernel kills them.

The example scene is played from the host into a compose project of this module's own
(the images of compose.yaml, with the instant fake providers through an override file and
``NATS_CLAIM_LEASE_S`` 3 s), and mid-scene:

- the nats container is killed (``docker kill -s KILL``: the server gets SIGKILL) and started
  again on its volume after 3 s and after 60 s;
- the postgres container is killed the same way and started again after 3 s;
- each stage's process is killed with SIGKILL inside its container, one stage after another
  (as the OOM killer kills it: tini exits 137 and ``restart: on-failure`` starts the
  container again), with one replica of each stage and with two;
- tts's process is stopped with SIGSTOP for 20 s and continued (two replicas).

After each, ``check_chaos``: every line accounted for and none cut in two, nothing said
twice, no stale audio, every turn and transcript line in PostgreSQL, and after the broker is
back the session's next transcript or turn within ``BACK_WITHIN_S``. ``docker start`` of a
killed container is the operator's (or the orchestrator's) part: a container that was
killed from outside is not restarted by Docker's restart policy.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_cli.admin import SceneSessions, tenant_client
from glyphoxa_cli.compose import ComposeStack
from glyphoxa_cli.player import ScenePlayer
from glyphoxa_cli.stack import STAGE_SERVICES
from glyphoxa_events.subjects import SessionSubjects
from tests.e2e.conftest import EXAMPLE_CAMPAIGN
from tests.e2e.test_chaos_e2e import LINES, SPEED, outage, play_scene
from tests.support.compose import docker, holder_of, project, signal_service

pytestmark = [pytest.mark.compose, pytest.mark.chaos, pytest.mark.timeout(2400)]

SCRIPT = "/run/glyphoxa/scene/stt-script.json"
LEASE = {"NATS_CLAIM_LEASE_S": "3"}


def override(home: Path) -> Path:
    """compose.yaml with the fake providers (stt says the scene's lines in order)."""
    script = home / "stt-script.json"
    script.write_text(json.dumps(LINES))
    script.chmod(0o644)
    doc = {"services": {
        "session-control": {"environment": {"SESSION_CONTROL_ALLOW_FAKE_PROVIDERS": "true"}},
        "vad": {"environment": LEASE},
        "stt": {"environment": {"STT_PROVIDER": "fake", "STT_FAKE_SCRIPT": SCRIPT, **LEASE},
                "volumes": [f"{script}:{SCRIPT}:ro"]},
        "npc-brain": {"environment": {"BRAIN_LLM_PROVIDER": "fake", **LEASE}},
        "tts": {"environment": {"TTS_PROVIDER": "fake", **LEASE}},
    }}
    path = home / "compose.chaos.yaml"
    path.write_text(json.dumps(doc, indent=1))  # JSON is YAML
    return path


class Chaotic:
    """The module's compose project, and the replicas it should be running."""

    def __init__(self, stack: ComposeStack):
        self.stack = stack
        self.replicas = 1

    def settle(self, replicas: int | None = None) -> None:
        """Every service running (``replicas`` of each stage) and healthy again."""
        self.replicas = replicas or self.replicas
        scale = [arg for s in STAGE_SERVICES for arg in ("--scale", f"{s}={self.replicas}")]
        self.stack.run("up", "-d", *scale, timeout_s=600)
        # Not ``up --wait``: it fails at once on a container Docker still holds unhealthy from
        # the fault just dealt (three failed probes during a 60 s broker outage), although
        # its next probe, at most 10 s on, finds it ready again.
        deadline = time.monotonic() + 300
        while (waiting := self.unhealthy()) and time.monotonic() < deadline:
            time.sleep(2)
        assert not waiting, f"not healthy again within 300 s: {waiting}"

    def unhealthy(self) -> list[str]:
        """The project's running containers that are not (yet) healthy, as 'name: state'."""
        ids = self.stack.run("ps", "-q").stdout.split()
        states = docker("inspect", "--format",
                        "{{.Name}} {{.State.Status}} "
                        "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}", *ids)
        return [f"{name.lstrip('/')}: {status}/{health}"
                for name, status, health in (line.split() for line in states.splitlines())
                if status != "running" or health not in ("healthy", "none")]

    def container(self, service: str) -> str:
        [one] = self.stack.run("ps", "-q", "--all", service).stdout.split()
        return one


@pytest.fixture(scope="module")
def chaotic(compose_images, request, tmp_path_factory) -> Iterator[Chaotic]:  # type: ignore[no-untyped-def]
    home = Path(tempfile.mkdtemp(prefix="glyphoxa-compose-chaos-"))
    home.chmod(0o755)  # the containers' user reads the stt script through a bind mount
    logs = tmp_path_factory.mktemp("compose-chaos-logs") / "compose.log"
    try:
        with project(compose_images, "chaos", request, logs, overrides=(override(home),),
                     fixed_ports=True) as stack:
            chaotic = Chaotic(stack)
            chaotic.settle(1)
            yield chaotic
    finally:
        shutil.rmtree(home, ignore_errors=True)


ComposeChaos = Callable[[Chaotic, ScenePlayer], Awaitable[None]]


async def play_through(chaotic: Chaotic, tenant: str, chaos: ComposeChaos, out: Path) -> None:
    """The scene with ``chaos`` let loose mid-scene, checked; then the stack settles."""
    stack = chaotic.stack
    await asyncio.to_thread(chaotic.settle)
    nc = await connect(BusSettings(url=await asyncio.to_thread(stack.nats_url)),
                       name=f"compose-chaos-{tenant}")
    key = await asyncio.to_thread(stack.operator_key)
    client, _ = await tenant_client(await asyncio.to_thread(stack.api_url), key, tenant)
    door = SceneSessions(client, tenant, EXAMPLE_CAMPAIGN.read_text(encoding="utf-8"))
    try:
        await play_scene(nc, door, lambda player: chaos(chaotic, player), out)
    finally:
        await client.close()
        await nc.close()
    await asyncio.to_thread(chaotic.settle)


def container_outage(service: str, outage_s: float) -> ComposeChaos:
    """``service``'s container killed (SIGKILL) and started again ``outage_s`` later."""
    async def chaos(chaotic: Chaotic, player: ScenePlayer) -> None:
        container = chaotic.container(service)
        await outage(player, outage_s, lambda: docker("kill", "--signal", "KILL", container),
                     lambda: docker("start", container))
    return chaos


async def test_nats_container_killed_and_back_after_3_s(chaotic, tmp_path):
    await play_through(chaotic, "cchaosnats3", container_outage("nats", 3), tmp_path)


async def test_nats_container_killed_and_back_after_60_s(chaotic, tmp_path):
    await play_through(chaotic, "cchaosnats60", container_outage("nats", 60), tmp_path)


async def test_postgres_container_killed_and_started_again(chaotic, tmp_path):
    async def chaos(chaotic: Chaotic, player: ScenePlayer) -> None:
        container = chaotic.container("postgres")
        await asyncio.to_thread(docker, "kill", "--signal", "KILL", container)
        await asyncio.sleep(3)
        await asyncio.to_thread(docker, "start", container)

    await play_through(chaotic, "cchaospg", chaos, tmp_path)


async def holder(chaotic: Chaotic, stage: str, player: ScenePlayer) -> str:
    subjects = SessionSubjects(player.tenant, player.session)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(holder_of, chaotic.stack, stage, subjects)
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {stage} replica holds the session")


def restarts(container: str) -> int:
    return int(docker("inspect", "--format", "{{.RestartCount}}", container))


async def crash_each_stage(chaotic: Chaotic, player: ScenePlayer) -> None:
    """The holding replica's process of each stage killed with SIGKILL, 2 s apart; each
    container is then seen started again by its restart policy."""
    crashed: dict[str, int] = {}
    for stage in STAGE_SERVICES:
        container = await holder(chaotic, stage, player)
        crashed[container] = await asyncio.to_thread(restarts, container)
        print(f"kill -9 {stage} in {container[:12]} ({chaotic.replicas} replicas)", flush=True)
        await asyncio.to_thread(signal_service, container, "KILL")
        await asyncio.sleep(4 / SPEED)
    deadline = time.monotonic() + 60
    while [c for c, n in crashed.items() if await asyncio.to_thread(restarts, c) <= n]:
        assert time.monotonic() < deadline, "a killed stage's container was not restarted"
        await asyncio.sleep(0.5)


async def test_each_stage_crashed_once_with_one_replica(chaotic, tmp_path):
    await asyncio.to_thread(chaotic.settle, 1)
    await play_through(chaotic, "cchaoskill1", crash_each_stage, tmp_path)


async def test_each_stage_crashed_once_with_two_replicas(chaotic, tmp_path):
    await asyncio.to_thread(chaotic.settle, 2)
    await play_through(chaotic, "cchaoskill2", crash_each_stage, tmp_path)


async def test_tts_stopped_for_20_s_with_two_replicas(chaotic, tmp_path):
    async def chaos(chaotic: Chaotic, player: ScenePlayer) -> None:
        container = await holder(chaotic, "tts", player)
        await asyncio.to_thread(signal_service, container, "STOP")
        try:
            states = await asyncio.to_thread(docker, "top", container, "-o", "pid,stat,args")
            assert any(line.split()[1].startswith("T") for line in states.splitlines()[1:]
                       if "glyphoxa_tts" in line), f"tts is not stopped:\n{states}"
            await asyncio.sleep(20)
        finally:
            await asyncio.to_thread(signal_service, container, "CONT")

    await asyncio.to_thread(chaotic.settle, 2)
    await play_through(chaotic, "cchaosstop", chaos, tmp_path)
