"""Chaos: the example scene played into a stack of processes while its parts are killed.

Mid-scene, nats-server is killed with -9 and started again on the same store (after 3 s
and after 60 s), PostgreSQL is killed with -9 and started again, each stage is killed with
-9 once (one replica, started again as ``glyphoxa up`` does, and two replicas), and tts is
stopped with SIGSTOP for 20 s. After each, the same checks (``check_chaos``):

- every line of the scene is accounted for: it came out as exactly one utterance (a line
  cut in two around an outage is a failure) with a turn that says what became of it;
- nothing is said twice: each utterance transcribed once, each turn and reply chunk and
  audio frame published once;
- no stale audio: no reply's first audio comes later than ``STALE_S`` after its line;
- what the stream holds of the session is in PostgreSQL: every turn and transcript line;
- the system answers again soon: after the broker is back, the session's next transcript
  or turn comes within ``BACK_WITHIN_S`` (printed; measured 2.4 s after a 3 s outage and
  0.5 s after a 60 s one: docs/operations.md).

Providers are the instant fakes (stt says the scene's lines in order), so what is tested
is the plumbing, not the models; ``NATS_CLAIM_LEASE_S`` is 3 s so a killed replica's
sessions move on quickly.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_campaign import load_campaign_file
from glyphoxa_cli.player import ScenePlayer
from glyphoxa_cli.results import write_results
from glyphoxa_cli.scenefile import load_scene
from glyphoxa_cli.stack import STAGE_SERVICES, Stack
from glyphoxa_cli.supervise import Supervisor
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_session_control.recorder import ACK_WAIT_S
from tests.e2e.conftest import EXAMPLE_CAMPAIGN, EXAMPLE_SCENE, scene_door
from tests.e2e.test_failover_e2e import check_each_once, read_all
from tests.support.pg import fresh_database

pytestmark = pytest.mark.chaos

SPEED = 2.0
STALE_S = 34.0  # a reply's first audio after its line, at most (TTS_LINE_STALE_AFTER_S: 30 s)
BACK_WITHIN_S = float(os.environ.get("CHAOS_BACK_WITHIN_S", "10"))  # the session's next event after the broker is back (target: 5 s)
SCENE = json.loads((EXAMPLE_SCENE / "scene.json").read_text())
LINES = [t["text"] for t in sorted(SCENE["turns"], key=lambda t: t["start_s"])]


def fakes(home: Path) -> dict[str, str]:
    script = home / "stt-script.json"
    script.write_text(json.dumps(LINES))
    return {"STT_PROVIDER": "fake", "STT_FAKE_SCRIPT": str(script),
            "BRAIN_LLM_PROVIDER": "fake", "TTS_PROVIDER": "fake",
            "SESSION_CONTROL_ALLOW_FAKE_PROVIDERS": "true", "NATS_CLAIM_LEASE_S": "3"}


class Supervised:
    """A stack whose stage processes ``glyphoxa up``'s supervisor starts again when they
    die; nats-server and PostgreSQL are the test's to kill and start."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.supervisor = Supervisor(stack, say=lambda line: print(line, flush=True))
        self.supervisor.children = [c for c in self.supervisor.children
                                    if c.name not in ("nats-server", "postgres")]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.supervisor.check()
            time.sleep(0.2)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _stack(pg_admin_dsn: str, replicas: int) -> Iterator[Supervised]:
    home = Path(tempfile.mkdtemp(prefix="glyphoxa-chaos-"))
    home.chmod(0o755)
    stack = Stack(home, env=fakes(home), pg_dsn=fresh_database(pg_admin_dsn),
                  replicas={s: replicas for s in STAGE_SERVICES},
                  services=("session-control", *STAGE_SERVICES))
    stack.start(progress=lambda m: None)
    supervised = Supervised(stack)
    try:
        yield supervised
    finally:
        supervised.close()
        stack.stop()
        if not os.environ.get("CHAOS_KEEP"):
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def one(pg_admin_dsn):
    """One replica of each stage."""
    yield from _stack(pg_admin_dsn, 1)


@pytest.fixture(scope="module")
def two(pg_admin_dsn):
    """Two replicas of each stage."""
    yield from _stack(pg_admin_dsn, 2)


@pytest.fixture
def own(pg_admin_dsn):
    """A stack of the test's own (the test kills its nats-server)."""
    yield from _stack(pg_admin_dsn, 1)


Chaos = Callable[[Supervised, ScenePlayer], Awaitable[None]]


async def play_through(supervised: Supervised, tenant: str, chaos: Chaos, out: Path,
                       under_way_turns: int = 2) -> tuple[ScenePlayer, list[dict]]:
    """Play the scene; once ``under_way_turns`` turns are done, let ``chaos`` loose."""
    stack = supervised.stack
    nc = await connect(BusSettings(url=stack.nats_url), name=f"chaos-{tenant}")
    door = await scene_door(stack, tenant)
    try:
        return await play_scene(nc, door, lambda player: chaos(supervised, player), out,
                                under_way_turns)
    finally:
        await door.client.close()
        await nc.close()


async def play_scene(nc, door, chaos: Callable[[ScenePlayer], Awaitable[None]], out: Path,  # type: ignore[no-untyped-def]
                     under_way_turns: int = 2) -> tuple[ScenePlayer, list[dict]]:
    """The example scene through ``door`` (into a stack of processes or a compose project)
    with ``chaos`` let loose once ``under_way_turns`` turns are done; then ``check_chaos``."""
    player = ScenePlayer(nc, load_scene(EXAMPLE_SCENE), load_campaign_file(EXAMPLE_CAMPAIGN),
                         door, speed=SPEED, timeout_s=400)
    playing = asyncio.create_task(player.play())
    try:
        deadline = time.monotonic() + 90
        while len(player.collected.turns) < under_way_turns and not playing.done():
            assert time.monotonic() < deadline, "the scene did not get under way"
            await asyncio.sleep(0.05)
        await chaos(player)
        await playing
    finally:
        if not playing.done():  # the chaos itself failed: the scene is not left playing
            playing.cancel()
            await asyncio.gather(playing, return_exceptions=True)
    rows = write_results(player, out)
    await check_chaos(nc, door, player, rows)
    return player, rows


async def check_chaos(nc, door, player: ScenePlayer, rows: list[dict]) -> None:  # type: ignore[no-untyped-def]
    subjects = SessionSubjects(player.tenant, player.session)
    # every line accounted for: one utterance each, none cut in two, each with its turn
    expected = Counter(r["expected"]["text"] for r in rows if r["expected"])
    assert sorted(expected) == sorted(LINES), f"lines lost: {set(LINES) - set(expected)}"
    assert max(expected.values()) == 1, f"a line cut in two: {expected.most_common(2)}"
    assert len(rows) == len(LINES), [r["transcript"] for r in rows]
    for row in rows:
        assert row["outcome"] != "missing" and row["reason"], row
    # nothing twice: transcripts, turns, reply chunks (the streams), audio frames
    await check_each_once(nc.jetstream(), subjects, rows)
    carried: dict[str, list] = {}  # turn:frame -> the messages that carry it
    for m in await read_all(nc.jetstream(), subjects.audio_out("*")):
        h = m.headers or {}
        for i in range(int(h.get("Glx-Frames", "1"))):
            carried.setdefault(f"{h.get('Glx-Turn', '')}:{int(h['Glx-Seq']) + i}", []).append(m)
    twice = {frame: msgs for frame, msgs in carried.items() if len(msgs) > 1}
    assert not twice, f"{len(twice)} audio frames published twice, e.g. " + "; ".join(
        f"{frame} in " + ", ".join(
            f"#{m.metadata.sequence.stream} (seq {m.headers['Glx-Seq']}, "
            f"{m.headers.get('Glx-Frames', '1')} frames, published_ns "
            f"{m.headers.get('Glx-Published-Ns')})" for m in msgs)
        for frame, msgs in list(twice.items())[:6])
    # no stale audio: measured as tts judges it, from the line's end in capture time (a
    # replay at SPEED 2 captures ahead of the wall clock, so the rows' wall-clock latency
    # would count the replay's lead as delay)
    c = player.collected
    for row in rows:
        first_ns, line = c.first_audio_ns.get(row["utterance"]), c.finals[row["utterance"]]
        late_s = (first_ns - line.speech_end_ns) / 1e9 if first_ns else 0.0
        assert late_s <= STALE_S, f"stale audio: {late_s:.1f} s after the line: {row}"
    # what was acked is in PostgreSQL (the recorder may take its ack wait to catch up)
    deadline = time.monotonic() + ACK_WAIT_S + 10
    while True:
        turns = {t["turn_id"] for t in await door.client.turns(player.session)}
        lines = await door.client.transcript(player.session)
        said = {ln["turn_id"] for ln in lines if ln["role"] == "player"}
        wanted = {r["utterance"] for r in rows}
        if (turns == wanted and said == wanted) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert turns == wanted, f"turns not recorded: {wanted - turns}"
    assert said == wanted, f"transcript lines not recorded: {wanted - said}"


def _answers(player: ScenePlayer) -> int:
    return len(player.collected.finals) + len(player.collected.turns)


async def _next_answer(player: ScenePlayer, since: float, seen: int, timeout_s: float) -> float:
    """Seconds from ``since`` until the session's next transcript or turn."""
    while _answers(player) == seen:
        assert time.monotonic() - since < timeout_s, \
            f"no transcript or turn within {timeout_s:.0f} s after the broker came back"
        await asyncio.sleep(0.02)
    return time.monotonic() - since


async def outage(player: ScenePlayer, outage_s: float, kill: Callable[[], None],
                 start: Callable[[], None]) -> float:
    """Kill the broker, start it again ``outage_s`` later on the same store, and measure
    how soon after it is back the session's next transcript or turn comes (printed)."""
    await asyncio.to_thread(kill)
    await asyncio.sleep(outage_s)
    seen = _answers(player)
    await asyncio.to_thread(start)
    back_s = await _next_answer(player, time.monotonic(), seen, BACK_WITHIN_S)
    print(f"broker down {outage_s:.0f} s: the session's next transcript or turn came "
          f"{back_s:.2f} s after it was back", flush=True)
    return back_s


def broker_outage(outage_s: float) -> Chaos:
    async def chaos(supervised: Supervised, player: ScenePlayer) -> None:
        nats = supervised.stack.nats
        assert nats is not None and nats.proc is not None

        def kill() -> None:
            assert nats.proc is not None
            os.kill(nats.proc.pid, signal.SIGKILL)
            nats.proc.wait(5)

        await outage(player, outage_s, kill, nats.start)
    return chaos


async def test_broker_killed_and_back_after_3_s(own, tmp_path):
    await play_through(own, "chaosnats3", broker_outage(3), tmp_path / "out")


async def test_broker_killed_and_back_after_60_s(own, tmp_path):
    await play_through(own, "chaosnats60", broker_outage(60), tmp_path / "out")


async def test_postgres_killed_and_started_again(pg_admin_dsn, tmp_path):
    """PostgreSQL of the stack's own (the shared test server is not ours to kill)."""
    home = Path(tempfile.mkdtemp(prefix="glyphoxa-chaos-pg-"))
    home.chmod(0o755)
    stack = Stack(home, env=fakes(home), services=("session-control", *STAGE_SERVICES))
    stack.start(progress=lambda m: None)
    supervised = Supervised(stack)

    async def chaos(supervised: Supervised, player: ScenePlayer) -> None:
        pg = supervised.stack.postgres
        assert pg is not None and pg.proc is not None
        os.kill(pg.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(pg.proc.wait, 5)
        await asyncio.sleep(3)
        await asyncio.to_thread(pg.start)

    try:
        await play_through(supervised, "chaospg", chaos, tmp_path / "out")
    finally:
        supervised.close()
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)


def kill_each_stage(replicas: int) -> Chaos:
    """kill -9 the replica holding the session, one stage after another, 4 s apart."""
    async def chaos(supervised: Supervised, player: ScenePlayer) -> None:
        for stage in STAGE_SERVICES:
            holder = await _holder(supervised, stage, player)
            print(f"kill -9 {holder.name} ({replicas} replicas)", flush=True)
            holder.kill9()
            await asyncio.sleep(4 / SPEED)
    return chaos


async def _holder(supervised: Supervised, stage: str, player: ScenePlayer):  # type: ignore[no-untyped-def]
    from tests.support.service import holds

    subjects = SessionSubjects(player.tenant, player.session)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for proc in supervised.stack.procs:
            if proc.service == stage and proc.proc is not None and proc.proc.poll() is None:
                try:
                    if holds(proc, subjects):
                        return proc
                except OSError:
                    pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {stage} replica holds the session")


async def test_each_stage_killed_once_with_one_replica(one, tmp_path):
    await play_through(one, "chaoskill1", kill_each_stage(1), tmp_path / "out")


async def test_each_stage_killed_once_with_two_replicas(two, tmp_path):
    await play_through(two, "chaoskill2", kill_each_stage(2), tmp_path / "out")


async def test_tts_paused_for_20_s(two, tmp_path):
    async def chaos(supervised: Supervised, player: ScenePlayer) -> None:
        tts = await _holder(supervised, "tts", player)
        assert tts.proc is not None
        os.kill(tts.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(20)
        finally:
            os.kill(tts.proc.pid, signal.SIGCONT)

    await play_through(two, "chaosstop", chaos, tmp_path / "out")
