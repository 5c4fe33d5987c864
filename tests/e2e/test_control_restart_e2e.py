"""kill -9 session-control in the middle of a played scene (fake providers, every service a
process): the session goes on, and after the restart every turn, transcript line and usage
event of the scene is in PostgreSQL, including those that happened while it was down."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_campaign import load_campaign_file
from glyphoxa_cli.player import ScenePlayer
from glyphoxa_cli.results import write_results
from glyphoxa_cli.scenefile import load_scene
from glyphoxa_cli.stack import Stack
from glyphoxa_session_control.recorder import ACK_WAIT_S
from tests.e2e.conftest import EXAMPLE_CAMPAIGN, EXAMPLE_SCENE, scene_door
from tests.support.pg import fresh_database

FAKES = {"STT_PROVIDER": "fake", "BRAIN_LLM_PROVIDER": "fake", "TTS_PROVIDER": "fake"}


@pytest.fixture
def stack(pg_admin_dsn):
    home = Path(tempfile.mkdtemp(prefix="glyphoxa-restart-"))
    s = Stack(home, env=FAKES, pg_dsn=fresh_database(pg_admin_dsn),
              services=("session-control", "vad", "stt", "npc-brain", "tts"))
    s.start(progress=lambda m: None)
    yield s
    s.stop()
    shutil.rmtree(home, ignore_errors=True)


async def test_session_control_killed_mid_scene_loses_nothing(stack, tmp_path):
    control = stack.by_name("session-control-1")
    nc = await connect(BusSettings(url=stack.nats_url), name="restart-test")
    door = await scene_door(stack, "restart")
    try:
        player = ScenePlayer(nc, load_scene(EXAMPLE_SCENE), load_campaign_file(EXAMPLE_CAMPAIGN),
                             door, speed=2, timeout_s=120)
        playing = asyncio.create_task(player.play())
        deadline = time.monotonic() + 60
        while len(player.collected.turns) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        control.kill9()
        turns_while_down = len(player.collected.turns)
        await asyncio.sleep(3)  # turns go on without it
        control.start()
        await asyncio.to_thread(control.wait_ready, 30)
        await playing
        assert len(player.collected.turns) > turns_while_down  # the table kept talking
        rows = write_results(player, tmp_path / "out")

        session = await door.client.session(player.session)
        transitions = [(t["to_state"], t["reason"]) for t in session["transitions"]]
        assert [s for s, _ in transitions] == ["pending", "active", "ending", "ended"], transitions
        assert transitions[2][1] == "scene finished"  # not ended by liveness meanwhile
        # a turn the killed process had fetched but not acked comes again after the
        # recorder's ack wait: recorded within it, not lost
        expected = sorted(r["utterance"] for r in rows)
        deadline = time.monotonic() + ACK_WAIT_S + 5
        while True:
            turns = await door.client.turns(player.session)
            if sorted(t["turn_id"] for t in turns) == expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert sorted(t["turn_id"] for t in turns) == expected
        lines = await door.client.transcript(player.session)
        assert {ln["turn_id"] for ln in lines if ln["role"] == "player"} == {r["utterance"] for r in rows}
        usage = await door.client.usage()
        assert usage["stt_audio_seconds"] > 0 and usage["session_seconds"] > 0
    finally:
        await door.client.close()
        await nc.close()
