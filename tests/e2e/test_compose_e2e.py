"""``docker compose up``, for real: the images built from nothing, the whole system composed
from compose.yaml, and the example scene played into it from the host.

1. build the images, ``up -d --wait`` with three stt replicas;
2. the example scene through ``glyphoxa scene play --stack compose`` (ports and the operator
   key found through docker compose): every addressed line answered by the right NPC,
   table talk silent, the session recorded;
3. the scene again with three stt replicas: the one holding it killed with SIGKILL
   mid-scene, then the one that took it over stopped with SIGTERM (as `docker compose stop`
   does): it completes, no utterance lost, no reply twice;
4. ``stop`` (every container exits 0: SIGTERM reached each service through tini), ``down``,
   ``up``: the first session's transcript is still readable and the streams kept;
5. vad's process killed inside its container: ``restart: on-failure`` brings it back ready;
6. the project's PostgreSQL image through testcontainers (the official image's interface).

Skipped, saying why, where no Docker engine answers (``./task docker-here`` makes one on a
Debian machine without a registry). Each step's duration is printed at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_cli.admin import SceneSessions, tenant_client
from glyphoxa_cli.compose import API_PORT, ComposeStack
from glyphoxa_cli.results import write_results, write_session_record
from glyphoxa_events.subjects import SessionSubjects
from tests.e2e.conftest import COMPOSE_TIMINGS, EXAMPLE_CAMPAIGN, EXAMPLE_SCENE
from tests.e2e.test_failover_e2e import check_each_once, read_all, scene_under_way
from tests.e2e.test_scene_e2e import check_scene, check_session_record
from tests.support.compose import TAG, holder_of, project

# the first test's setup builds every image: ~8 min with an empty build cache on 2 cores
pytestmark = [pytest.mark.compose, pytest.mark.timeout(2400)]

GLYPHOXA = str(Path(sys.executable).parent / "glyphoxa")
SERVICES = ("session-control", "vad", "stt", "npc-brain", "tts", "discord-edge")


class Timings:
    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []

    def run(self, name: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            self.steps.append((name, time.monotonic() - t0))

    def report(self) -> str:
        return "\n".join(f"  {name:<52} {seconds:7.1f} s" for name, seconds in self.steps)


STATE: dict[str, object] = {}


@pytest.fixture(scope="module")
def timings(request):  # type: ignore[no-untyped-def]
    t = Timings()
    yield t
    if t.steps:
        request.config.stash[COMPOSE_TIMINGS] = t.report()
    target = os.environ.get("GLYPHOXA_COMPOSE_TIMINGS")
    if target:
        Path(target).write_text(json.dumps(dict(t.steps), indent=1))


@pytest.fixture(scope="module")
def stack(compose_images, timings, request, tmp_path_factory):  # type: ignore[no-untyped-def]
    timings.steps.append(("build the images (docker compose build, once a run)",
                          compose_images.build_s))
    logs = tmp_path_factory.mktemp("compose-logs") / "compose.log"
    with project(compose_images, "e2e", request, logs) as compose:
        os.environ.update(compose.env)  # the CLI, run as a user would, finds this project
        try:
            timings.run("up -d --wait (stt=3), to all healthy", compose.run, "up", "-d",
                        "--wait", "--scale", "stt=3", timeout_s=900)
            yield compose
        finally:
            for key in compose.env:
                os.environ.pop(key, None)


def test_the_example_scene_through_the_composed_stack(stack, timings, tmp_path):
    out = tmp_path / "scene"
    result = timings.run(
        "example scene via `glyphoxa scene play --stack compose`", subprocess.run,
        [GLYPHOXA, "scene", "play", str(EXAMPLE_SCENE), "--campaign", str(EXAMPLE_CAMPAIGN),
         "--out", str(out), "--stack", "compose", "--tenant", "compose", "--timeout", "300"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    rows = [json.loads(line) for line in (out / "turns.jsonl").read_text().splitlines()]
    check_scene(rows, EXAMPLE_SCENE, out)
    check_session_record(rows, out)
    STATE["record"] = json.loads((out / "session.json").read_text())


async def nobody_gets_in(url: str) -> None:
    import nats

    host = url.rsplit("@", 1)[-1]
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(f"nats://{host}", allow_reconnect=False, max_reconnect_attempts=0)
    nc = await connect(BusSettings(url=url), name="compose-operator-test", declare=False)
    await nc.close()


def test_nats_wants_a_login_and_the_cli_hands_the_operator_its_own(stack):
    """NATS in the composed stack refuses a client that does not log in (docs/adr/0006);
    ``glyphoxa keys --compose [--nats]`` reads the operator's admin key and NATS login."""
    def keys(*args: str) -> str:
        done = subprocess.run([GLYPHOXA, "keys", "--compose", *args], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert keys() == stack.operator_key()
    url = keys("--nats")
    assert url.startswith("nats://operator:") and url == stack.nats_url()
    asyncio.run(nobody_gets_in(url))


async def play_and_kill(stack: ComposeStack, out: Path) -> tuple[list[dict], SessionSubjects, int]:
    nc = await connect(BusSettings(url=stack.nats_url()), name="compose-failover-test")
    client, _ = await tenant_client(stack.api_url(), stack.operator_key(), "failover")
    door = SceneSessions(client, "failover", EXAMPLE_CAMPAIGN.read_text(encoding="utf-8"))
    try:
        player, playing = await scene_under_way(nc, door, timeout_s=300, first_final_s=120)
        subjects = SessionSubjects("failover", player.session)
        holder = await asyncio.to_thread(holder_of, stack, "stt", subjects)
        assert holder is not None, "no stt replica lists the session"
        killed = subprocess.run(["docker", "kill", "--signal", "KILL", holder],
                                capture_output=True, text=True)
        assert killed.returncode == 0, killed.stderr
        STATE["killed"] = holder
        # another replica takes the claim once its lease runs out; then that one is stopped
        # the way `docker compose stop` stops a replica (SIGTERM): it hands the session on
        successor = None
        deadline = time.monotonic() + 120
        while successor is None and not playing.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            successor = await asyncio.to_thread(holder_of, stack, "stt", subjects)
        assert successor is not None and successor != holder, "nobody took the session over"
        stopped = await asyncio.to_thread(subprocess.run, ["docker", "stop", successor],
                                          capture_output=True, text=True)
        assert stopped.returncode == 0, stopped.stderr
        STATE["stopped"] = successor
        await playing
        rows = write_results(player, out)
        await write_session_record(client, player.session, out)
        return rows, subjects, await check_each_once(nc.jetstream(), subjects, rows)
    finally:
        await client.close()
        await nc.close()


def test_stt_replicas_killed_and_stopped_mid_scene_lose_nothing(stack, timings, tmp_path):
    out = tmp_path / "failover"
    rows, subjects, finals = timings.run("example scene, stt holder SIGKILLed, then SIGTERMed",
                                         asyncio.run, play_and_kill(stack, out))
    check_scene(rows, EXAMPLE_SCENE, out)
    check_session_record(rows, out)
    STATE["failover"] = (subjects, finals)


def exit_codes(stack: ComposeStack) -> dict[tuple[str, str], int]:
    """(service, container) -> exit code of every stopped container but the SIGKILLed one."""
    rows = stack.run("ps", "--all", "--format", "json").stdout
    items = [json.loads(line) for line in rows.splitlines() if line.strip()]
    if len(items) == 1 and isinstance(items[0], list):  # older compose: one JSON array
        items = items[0]
    killed = str(STATE.get("killed", "-"))
    return {(item["Service"], item["Name"]): int(item["ExitCode"]) for item in items
            if item["Service"] != "keys" and not killed.startswith(item["ID"])}


async def transcript_after_restart(stack: ComposeStack, session: str) -> list[dict]:
    client, _ = await tenant_client(stack.api_url(), stack.operator_key(), "compose")
    async with client:
        return await client.transcript(session)


async def retained(stack: ComposeStack, subjects: SessionSubjects) -> int:
    nc = await connect(BusSettings(url=stack.nats_url()), name="compose-retention-test")
    try:
        return sum(json.loads(m.data)["final"]
                   for m in await read_all(nc.jetstream(), subjects.stt("*")))
    finally:
        await nc.close()


def test_down_and_up_keeps_sessions_transcripts_and_streams(stack, timings):
    if "record" not in STATE or "failover" not in STATE:
        pytest.skip("needs the two scenes above")
    timings.run("stop (SIGTERM to every container)", stack.run, "stop", timeout_s=120)
    codes = exit_codes(stack)
    assert {service for service, _ in codes} == {*SERVICES, "nats", "postgres"}, codes
    assert not {name: code for (_, name), code in codes.items() if code}, "not a clean stop"
    timings.run("down (volumes kept)", stack.run, "down", timeout_s=120)
    timings.run("up -d --wait again, to all healthy", stack.run, "up", "-d", "--wait",
                timeout_s=900)
    record = STATE["record"]
    assert isinstance(record, dict)
    session = record["session"]["id"]
    transcript = asyncio.run(transcript_after_restart(stack, session))
    assert transcript == record["transcript"]
    subjects, finals = STATE["failover"]
    assert asyncio.run(retained(stack, subjects)) == finals  # type: ignore[arg-type]
    host, port = stack.published("session-control", API_PORT)
    assert host == "127.0.0.1" and port > 0


def restarts_and_health(container: str) -> tuple[int, str]:
    out = subprocess.run(["docker", "inspect", "--format",
                          "{{.RestartCount}} {{.State.Health.Status}}", container],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), out[1]


def test_a_crashed_service_is_restarted_and_ready_again(stack, timings):
    """``restart: on-failure``: vad's process killed inside its container (as the OOM killer
    would: tini, PID 1, then exits 137) comes back by itself and is ready again."""
    [container] = stack.containers("vad")
    restarts, health = restarts_and_health(container)
    assert health == "healthy"
    subprocess.run(["docker", "exec", container, "sh", "-c", "kill -KILL -1"],
                   capture_output=True)  # every process of the service's user but PID 1

    def back() -> tuple[int, str]:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            state = restarts_and_health(container)
            if state[0] > restarts and state[1] == "healthy":
                return state
            time.sleep(0.5)
        return state

    assert timings.run("vad crashed, restarted, healthy again", back) == (restarts + 1, "healthy")


async def pgvector_works(dsn: str) -> str:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        row = await (await conn.execute("SELECT '[1,2]'::vector <-> '[4,6]'::vector, version()")
                     ).fetchone()
        assert row is not None and row[0] == 5.0
        return str(row[1])


def test_the_postgres_image_serves_testcontainers_like_the_official_one(stack, timings):
    from tests.support.containers import postgres_container

    def start_and_query() -> str:
        with postgres_container(f"glyphoxa/postgres:{TAG}") as dsn:
            return asyncio.run(pgvector_works(dsn))

    version = timings.run("testcontainers: the postgres image started, pgvector used",
                          start_and_query)
    assert version.startswith("PostgreSQL 18")
