"""Fuzz: 100,000 malformed and hostile messages at a live session (issue 13).

The example scene is played (fake providers, ``--speed 2``) into a stack of processes, and
once every player has been heard, a process of its own (``tests/support/flood.py``) floods
what each service reads with messages a seeded generator makes (``tests/support/hostile.py``):
``audio.in`` (vad), ``vad.*`` (stt), ``stt.*`` (npc-brain), ``reply.*`` (tts), ``ctl.*`` (every
stage, and session-control's recorder for ``ctl.turn``/``ctl.played``), ``usage.*`` and other
sessions' turns (the recorder), and malformed claims (each stage's claim worker). Then:

- every service (and nats-server) is alive, ``/healthz`` and ``/readyz`` say ok;
- the scene came out as a clean run does: each line one utterance, transcribed as said,
  answered by the NPC it addresses or not answered (table talk);
- every message JetStream stored is counted as rejected by the reader it was meant for, one
  for one: ``glyphoxa_<stage>_rejected_messages_total`` and the recorder's parked events.
  What is dropped without a rejection is dropped by design, and counted apart: a JetStream
  duplicate of a ``Nats-Msg-Id`` (never stored), the repeated tail of an utterance or turn
  its reader finished (stt and npc-brain take it for a redelivery), a subject no consumer
  reads (a token too many), a message larger than the stream takes (refused at publish);
- the recorder still records the scene: its turns and transcript are in PostgreSQL, and the
  tenant's usage is finite;
- each service's log stays small (rejections are logged at first, then every 100th), with
  no error in it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_campaign import load_campaign_file
from glyphoxa_cli.player import ScenePlayer
from glyphoxa_cli.processes import ServiceProcess
from glyphoxa_cli.results import write_results
from glyphoxa_cli.scenefile import load_scene
from glyphoxa_cli.stack import STAGE_SERVICES, Stack
from tests.e2e.conftest import EXAMPLE_CAMPAIGN, EXAMPLE_SCENE, ROOT, scene_door
from tests.support.flood import Tally
from tests.support.hostile import NOBODY, TOLERATED
from tests.support.pg import fresh_database
from tests.support.service import http_get

TOTAL = 100_000
FLOOD_S = 15.0
"""The flood is spread over this long (most of the rest of the scene at ``SPEED``)."""
SPEED = 2.0
MAX_LOG_LINES = 2_000
MAX_LOG_BYTES = 2 * 1024 * 1024
SCENE = json.loads((EXAMPLE_SCENE / "scene.json").read_text())
TURNS = sorted(SCENE["turns"], key=lambda t: t["start_s"])
PARKED = ("malformed", "unknown_session", "refused")


@pytest.fixture
def stack(pg_admin_dsn, tmp_path):
    home = Path(tempfile.mkdtemp(prefix="glyphoxa-fuzz-"))
    home.chmod(0o755)
    script = home / "stt-script.json"  # the fake stt says the scene's lines in order
    script.write_text(json.dumps([t["text"] for t in TURNS]))
    fakes = {"STT_PROVIDER": "fake", "STT_FAKE_SCRIPT": str(script), "BRAIN_LLM_PROVIDER": "fake",
             "TTS_PROVIDER": "fake", "SESSION_CONTROL_ALLOW_FAKE_PROVIDERS": "true"}
    s = Stack(home, env=fakes, pg_dsn=fresh_database(pg_admin_dsn),
              services=("session-control", *STAGE_SERVICES))
    s.start(progress=lambda m: None)
    yield s
    s.stop()
    shutil.copytree(home / "logs", tmp_path / "logs")  # kept by pytest, for a failure's story
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def quiet_player():
    """The scene player refuses what it cannot read, and its client warns of each one."""
    client_log = logging.getLogger("glyphoxa_bus.connection")
    level = client_log.level
    client_log.setLevel(logging.ERROR)
    yield
    client_log.setLevel(level)


async def flood(stack: Stack, session: str, speakers: tuple[str, ...], npcs: tuple[str, ...]) -> Tally:
    """The hostile publisher's process, to its end; what it sent and where each went."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.flood", str(stack.nats_url), "fuzz", session,
        "--speakers", ",".join(speakers), "--npcs", ",".join(npcs), "--total", str(TOTAL),
        "--seconds", str(FLOOD_S), cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    finally:
        if proc.returncode is None:  # (our own child, by its pid)
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, "the flood failed"
    return Tally.from_json(out.decode())


class FuzzDoor:
    """The scene player's door, which lets the session end only once ``before_stop`` is done
    (the flood published and its rejections counted: a stage stops reading when the session
    ends)."""

    def __init__(self, door):  # type: ignore[no-untyped-def]
        self.door, self.tenant, self.client = door, door.tenant, door.client
        self.before_stop: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> str:
        return await self.door.start()

    async def stop(self, session: str, reason: str) -> None:
        if self.before_stop is not None:
            await self.before_stop()
        await self.door.stop(session, reason)


# --- what the services say -------------------------------------------------------------------


def samples(proc: ServiceProcess, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one Prometheus metric of a service, by their labels."""
    out = {}
    for line in http_get(proc.metrics_port, "/metrics").splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].rsplit("} ", 1)
            pairs = (p.split("=", 1) for p in labels.split(",") if p)
            out[tuple((k, v.strip('"')) for k, v in pairs)] = float(value)
    return out


def rejected(proc: ServiceProcess) -> Counter[str]:
    """A stage's rejected messages by reason."""
    name = f"glyphoxa_{proc.service.replace('-', '_')}_rejected_messages_total"
    return Counter({dict(k)["reason"]: int(v) for k, v in samples(proc, name).items()})


def recorded(proc: ServiceProcess) -> Counter[str]:
    """session-control's recorder: events by result (stored, or parked as malformed, ...)."""
    counts: Counter[str] = Counter()
    for labels, value in samples(proc, "glyphoxa_session_control_recorded_events_total").items():
        counts[dict(labels)["result"]] += int(value)
    return counts


def grouped(reasons: Counter[str]) -> dict[str, int]:
    """A stage's rejections as the flood's tally groups them: own input, control, claims."""
    return {"input": sum(n for r, n in reasons.items() if r not in ("malformed_control", "malformed_claim")),
            "control": reasons["malformed_control"], "claims": reasons["malformed_claim"]}


def healthy(stack: Stack) -> None:
    assert stack.nats is not None and stack.nats.proc is not None and stack.nats.proc.poll() is None
    for proc in stack.procs:
        assert proc.proc is not None and proc.proc.poll() is None, f"{proc.name} exited"
        assert json.loads(http_get(proc.metrics_port, "/healthz"))["status"] == "ok"
        ready = json.loads(http_get(proc.metrics_port, "/readyz"))
        assert ready["ready"] is True and ready["nats"] is True, (proc.name, ready)


async def eventually(check: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while not check() and time.monotonic() - started < timeout_s:
        await asyncio.sleep(0.25)
    return time.monotonic() - started


# --- the test ---------------------------------------------------------------------------------


async def test_a_flood_of_hostile_messages_changes_nothing_and_is_counted(stack, tmp_path, quiet_player):
    procs = {p.service: p for p in stack.procs}
    stages_before = {s: rejected(procs[s]) for s in STAGE_SERVICES}
    recorded_before = recorded(procs["session-control"])
    nc = await connect(BusSettings(url=stack.nats_url), name="fuzz-player", declare=False)
    door = FuzzDoor(await scene_door(stack, "fuzz"))
    campaign = load_campaign_file(EXAMPLE_CAMPAIGN)
    player = ScenePlayer(nc, load_scene(EXAMPLE_SCENE), campaign, door, speed=SPEED, timeout_s=240)
    started = time.monotonic()
    try:
        playing = asyncio.create_task(player.play())
        speakers = tuple(p["name"] for p in SCENE["players"])
        # from when vad knows every player (a frame of a player it never heard is judged
        # against nothing: a forged one could then be the player's first)
        while {u.speaker for u in player.collected.utterances.values()} != set(speakers):
            assert not playing.done() and time.monotonic() - started < 60, "the scene did not start"
            await asyncio.sleep(0.05)
        flooding = asyncio.create_task(
            flood(stack, player.session, speakers, tuple(n.token for n in campaign.npcs)))
        counted_s = 0.0

        async def counted() -> None:  # before the session may end
            nonlocal counted_s
            tally = await flooding
            healthy(stack)  # with the session live and the flood just over
            counted_s = await eventually(lambda: all(
                grouped(rejected(procs[s]) - stages_before[s]) == tally.stage_rejects(s)
                for s in STAGE_SERVICES), timeout_s=30)

        door.before_stop = counted
        await playing
        tally = flooding.result()
        rows = write_results(player, tmp_path / "out")
        recorded_s = await eventually(
            lambda: sum((recorded(procs["session-control"]) - recorded_before)[r] for r in PARKED)
            >= tally.parked(), timeout_s=60)
        healthy(stack)  # after it all

        # what was sent, stored, rejected and logged (printed for the record, then checked)
        got = {stage: rejected(procs[stage]) - stages_before[stage] for stage in STAGE_SERVICES}
        parked = recorded(procs["session-control"]) - recorded_before
        logs = {p.name: (p.log_path.read_text(errors="replace").count("\n"), p.log_path.stat().st_size)
                for p in stack.procs}
        print(json.dumps({
            "sent": tally.sent, "stored": tally.stored, "duplicates": tally.duplicates,
            "refused": tally.refused, "categories": tally.categories, "flood_s": round(tally.seconds, 1),
            "counted_after_s": round(counted_s, 1), "recorded_after_s": round(recorded_s, 1),
            "rejected": got, "recorder": parked, "log_lines_bytes": logs,
            "test_s": round(time.monotonic() - started, 1)}, indent=1))

        # every stored message rejected by its reader, one for one
        for stage in STAGE_SERVICES:
            assert got[stage]["handler_error"] == 0, (stage, got[stage])  # a crash, not a rejection
            assert grouped(got[stage]) == tally.stage_rejects(stage), (stage, tally.stage_rejects(stage))
        assert sum(parked[r] for r in PARKED) == tally.parked(), (parked, tally.parked())
        assert tally.sent == TOTAL == sum(tally.stored.values()) + tally.duplicates + sum(
            tally.refused.values())
        assert tally.stored[TOLERATED] > 0 and tally.stored[NOBODY] > 0 and tally.duplicates > 0

        # the scene came out as a clean run does
        assert [(r["player"], r["transcript"], r["npc"], r["outcome"]) for r in rows] == [
            (t["player"], t["text"], t["addressed"], "answered" if t["addressed"] else "not_addressed")
            for t in TURNS]

        # the recorder still records: the scene's turns and transcript are in PostgreSQL
        session = await door.client.session(player.session)
        transitions = [(t["to_state"], t["reason"]) for t in session["transitions"]]
        assert [s for s, _ in transitions] == ["pending", "active", "ending", "ended"], transitions
        assert transitions[2][1] == "scene finished"  # not ended by liveness meanwhile
        turns = {t["turn_id"] for t in await door.client.turns(player.session)}
        lines = await door.client.transcript(player.session)
        assert turns == {r["utterance"] for r in rows}
        assert {ln["turn_id"]: ln["text"] for ln in lines if ln["role"] == "player"} == {
            r["utterance"]: r["transcript"] for r in rows}
        assert {ln["turn_id"] for ln in lines if ln["role"] == "npc"} == {
            r["utterance"] for r in rows if r["outcome"] == "answered"}
        usage = await door.client.usage()
        assert all(math.isfinite(v) for v in usage.values() if isinstance(v, float)), usage

        # logs bounded, and no error among them
        for name, (n_lines, n_bytes) in logs.items():
            assert n_lines < MAX_LOG_LINES and n_bytes < MAX_LOG_BYTES, (name, n_lines, n_bytes)
        errors = {name: [ln for ln in log.splitlines() if '"level": "error"' in ln][:3]
                  for name, log in stack.logs().items()}
        assert not any(errors.values()), errors
    finally:
        await door.client.close()
        await nc.close()
