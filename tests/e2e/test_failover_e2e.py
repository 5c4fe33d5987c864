"""Failover: two stt replicas; the one holding the session is killed with SIGKILL mid-scene.

The scene still completes, no utterance is lost and no reply is given twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest
from nats.js.api import DeliverPolicy

from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_campaign import load_campaign_file
from glyphoxa_cli.player import ScenePlayer
from glyphoxa_cli.results import write_results
from glyphoxa_cli.scenefile import load_scene
from glyphoxa_cli.stack import Stack
from glyphoxa_events.subjects import SessionSubjects
from tests.e2e.conftest import EXAMPLE_CAMPAIGN, EXAMPLE_SCENE, scene_door
from tests.e2e.test_scene_e2e import check_scene
from tests.support.intelligibility import words
from tests.support.pg import fresh_database
from tests.support.service import holds


async def read_all(js, subject: str) -> list:
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    msgs = []
    try:
        while True:
            msg = await sub.next_msg(1.0)
            msgs.append(msg)
            if msg.metadata.num_pending == 0:
                break
    except Exception:  # noqa: BLE001 - no (more) messages
        pass
    await sub.unsubscribe()
    return msgs


async def scene_under_way(nc, door, timeout_s: float, first_final_s: float  # type: ignore[no-untyped-def]
                          ) -> tuple[ScenePlayer, asyncio.Task]:
    """The example scene playing into a new session, once its first line is transcribed
    (so a replica holds the session and has work in flight)."""
    player = ScenePlayer(nc, load_scene(EXAMPLE_SCENE), load_campaign_file(EXAMPLE_CAMPAIGN),
                         door, timeout_s=timeout_s)
    playing = asyncio.create_task(player.play())
    deadline = time.monotonic() + first_final_s
    while not player.collected.finals and time.monotonic() < deadline and not playing.done():
        await asyncio.sleep(0.05)
    assert player.collected.finals, "no transcript before the kill"
    return player, playing


async def check_each_once(js, subjects: SessionSubjects, rows: list[dict]) -> int:  # type: ignore[no-untyped-def]
    """What the streams kept of a scene after a failover: every utterance transcribed once
    (none lost), every turn and every reply chunk published once. The number of finals."""
    finals = [json.loads(m.data) for m in await read_all(js, subjects.stt("*"))]
    finals = [f["utterance_id"] for f in finals if f["final"]]
    assert len(finals) == len(set(finals)) == len(rows), "an utterance lost or transcribed twice"
    turns = [json.loads(m.data)["turn_id"] for m in await read_all(js, subjects.ctl("turn"))]
    assert len(turns) == len(set(turns)) == len(rows)
    stored = [json.loads(m.data) for m in await read_all(js, subjects.reply("*"))]
    chunks = Counter((c["turn_id"], c["index"]) for c in stored)
    assert chunks and max(chunks.values()) == 1, "a reply chunk was published twice"
    # what tts spoke (the stored chunks) is what the transcript says was said: a brain
    # redoing a turn whose first sentences were stored must not end it with other words
    spoken: dict[str, list[tuple[int, str]]] = {}
    for c in stored:
        if not c.get("hold"):
            spoken.setdefault(c["turn_id"], []).append((c["index"], c["text"]))
    for row in rows:
        if row["outcome"] == "answered":
            said = " ".join(text for _, text in sorted(spoken.get(row["utterance"], [])))
            assert words(said) == words(row["reply"]), \
                f"{row['utterance']}: spoken {said!r}, transcript says {row['reply']!r}"
    return len(finals)


@pytest.fixture
def stack(tmp_path, pg_admin_dsn):
    s = Stack(tmp_path / "stack", replicas={"stt": 2}, env={"NATS_CLAIM_LEASE_S": "3"},
              services=("session-control", "vad", "stt", "npc-brain", "tts"),
              pg_dsn=fresh_database(pg_admin_dsn))
    s.start(progress=lambda m: None)
    yield s
    s.stop()


async def test_stt_replica_killed_mid_scene(stack, tmp_path):
    nc = await connect(BusSettings(url=stack.nats_url), name="failover-test")
    door = await scene_door(stack, "failover")
    try:
        player, playing = await scene_under_way(nc, door, timeout_s=240, first_final_s=60)
        replicas = [p for p in stack.procs if p.service == "stt"]
        holder = next(p for p in replicas
                      if holds(p, SessionSubjects("failover", player.session)))
        holder.kill9()
        await playing

        out = tmp_path / "out"
        rows = write_results(player, out)
        check_scene(rows, EXAMPLE_SCENE, out)

        await check_each_once(nc.jetstream(), SessionSubjects("failover", player.session), rows)
    finally:
        await door.client.close()
        await nc.close()
