"""The memory evaluation (issue 16, ``glyphoxa_cli.memory_eval``) through real services:
nats-server, PostgreSQL, session-control (recorder, MiniLM indexer, recall, recaps), vad, stt,
npc-brain and tts, with the instant fake LLM (and fake stt/tts: the transcripts go straight to
npc-brain). Deterministic whatever the LLM: in session 2 the memory of each case's fact is in
the witnessing NPC's prompt every time and in no other NPC's prompt. Reply-level scores need a
real model: ``./task bench-memory``."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from glyphoxa_cli.memory_eval import CASES, NPCS, recall_counts, run_eval
from glyphoxa_cli.stack import STAGE_SERVICES, Stack
from tests.support.pg import fresh_database

TENANT = "memoryeval"


@pytest.fixture(scope="module")
def stack(pg_admin_dsn):
    home = Path(tempfile.mkdtemp(prefix="glyphoxa-memory-eval-"))
    home.chmod(0o755)  # as root, PostgreSQL runs as nobody
    env = {"STT_PROVIDER": "fake", "BRAIN_LLM_PROVIDER": "fake", "TTS_PROVIDER": "fake",
           "SESSION_CONTROL_ALLOW_FAKE_PROVIDERS": "true", "LOG_LEVEL": "warning",
           "SESSION_CONTROL_RECAP_RETRY_S": "2"}  # recaps soon after session 1
    s = Stack(home, env=env, pg_dsn=fresh_database(pg_admin_dsn),
              services=("session-control", *STAGE_SERVICES))
    s.start(progress=lambda m: None)
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(home, ignore_errors=True)


async def evaluate(stack: Stack):  # type: ignore[no-untyped-def]
    from glyphoxa_bus.connection import BusSettings, connect
    from glyphoxa_cli.admin import tenant_client

    client, _ = await tenant_client(stack.api_url, stack.keys()["operator_key"], TENANT)
    nc = await connect(BusSettings(url=stack.nats_url or ""), name="memory-eval")
    try:
        scores = await run_eval(client, nc, TENANT, recap_timeout_s=60.0)
        witnessed = {npc: {str(m["id"]) for m in await client.call(
            "GET", f"/v1/campaigns/{scores.campaign}/npcs/{npc}/memories", params={"limit": 500})}
            for npc in NPCS}
        return scores, witnessed
    finally:
        await nc.close()
        await client.close()


def test_each_fact_is_in_the_witness_prompt_and_in_no_other(stack):
    scores, witnessed = asyncio.run(evaluate(stack))
    brain = stack.by_name("npc-brain-1")
    recalls = recall_counts(httpx.get(f"http://127.0.0.1:{brain.metrics_port}/metrics").text)
    print(scores.summary() + "\n" + scores.table() + f"\nrecalls: {recalls}")  # when it fails
    assert len(scores.rows) == len(CASES) >= 10
    kinds = {c.name for c in CASES}
    assert {"taught", "overheard", "paraphrase"} <= kinds
    # the targets: 100 % in the witness's prompt, 0 % in any other's
    missed = [r["case"] for r in scores.rows if not r["prompt_recall"]]
    leaked = [(r["case"], o["npc"]) for r in scores.rows for o in r["outsiders"] if o["prompt_leak"]]
    assert not missed and scores.prompt_recall == 1.0, missed
    assert not leaked and scores.prompt_leakage == 0.0, leaked
    for row in scores.rows:
        # every question was answered, and every NPC was given only memories it witnessed
        assert row["witness_reply"], row
        assert set(row["witness_memories"]) <= witnessed[row["witness"]], row
        for outsider in row["outsiders"]:
            assert outsider["reply"], row
            assert set(outsider["memories"]) <= witnessed[outsider["npc"]], row
            assert row["memory"] not in witnessed[outsider["npc"]], row
    overheard = next(r for r in scores.rows if r["case"] == "overheard")
    told = next(c for c in CASES if c.name == "overheard")
    assert told.told != overheard["witness"]  # recalled by the NPC that only overheard it
    # npc-brain asked for memories on every question (the outsiders have their own chatter)
    assert all(o["memories"] for r in scores.rows for o in r["outsiders"])
