"""Campaign memory in session-control's PostgreSQL (docs/adr/0007): migration 0008, the
recorder writing heard exchanges with their witnesses, the indexer, recall, transcript search,
facts and recaps, tenant isolation and deletion with the campaign. Real PostgreSQL 18 with
pgvector, a real nats-server for the recorder, and a deterministic test embedder."""

from __future__ import annotations

import asyncio
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from glyphoxa_bus.streams import ensure_streams
from glyphoxa_campaign import Campaign
from glyphoxa_events.models import Played, TurnEnded, TurnLatency
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_pg.migrations import load_migrations, migrate
from glyphoxa_session_control import memory
from glyphoxa_session_control.campaigns import Campaigns
from glyphoxa_session_control.errors import Invalid, NotFound
from glyphoxa_session_control.recorder import Recorder, parse
from tests.support.embedder import HashEmbedder
from tests.support.pg import fresh_database
from tests.support.service import wait_for

pytestmark = pytest.mark.integration

FORGE = {
    "name": "Forge",
    "overhear": True,
    "lore": "The town of Emberfall sits under the volcano.",
    "npcs": [
        {"name": "Greta", "persona": "A blacksmith.", "scene": "smithy"},
        {"name": "Tobias", "persona": "Her apprentice.", "scene": "smithy"},
        {"name": "Aldric", "persona": "A priest.", "scene": "chapel"},
        {"name": "Vex", "persona": "A wanderer without a place."},
    ],
}


@pytest.fixture(scope="module")
def memory_dsn(pg_admin_dsn: str) -> str:
    """A database of this module's own with session-control's migrations applied."""
    dsn = fresh_database(pg_admin_dsn)

    async def apply() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await migrate(conn, load_migrations(files("glyphoxa_session_control") / "migrations"))
    asyncio.run(apply())
    return dsn


@pytest.fixture
async def pool(memory_dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    p = AsyncConnectionPool(memory_dsn, min_size=1, max_size=4, open=False,
                            kwargs={"row_factory": dict_row, "autocommit": True})
    await p.open(wait=True)
    try:
        yield p
    finally:
        await p.close()


async def new_tenant(pool: AsyncConnectionPool, tenant: str, campaign: dict | None = None,
                     **changes: object) -> Campaign:
    """``tenant`` with the campaign (``FORGE`` with ``changes``) stored through Campaigns."""
    body = Campaign.model_validate({**(campaign or FORGE), **changes})
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tenants (id, name, max_concurrent_sessions, monthly_session_hours)"
                           " VALUES (%s, %s, 5, 10) ON CONFLICT DO NOTHING", (tenant, tenant))
    await Campaigns(pool).create(tenant, body, "test")
    return body


async def new_session(pool: AsyncConnectionPool, tenant: str, campaign: Campaign,
                      sid: str | None = None, cid: str = "forge", replay_of: str | None = None) -> str:
    sid = sid or "s" + uuid.uuid4().hex[:8]
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO sessions (tenant_id, id, campaign_id, campaign, edge, replay_of)"
                           " VALUES (%s, %s, %s, %s, 'sim', %s)",
                           (tenant, sid, cid, Jsonb(campaign.model_dump(mode="json")), replay_of))
    return sid


async def rows(pool: AsyncConnectionPool, sql: str, *params: object) -> list[dict]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall() if cur.description else []


def turn(turn_id: str, npc: str | None, transcript: str, reply: str = "",
         outcome: str = "answered", speaker: str = "sam") -> TurnEnded:
    return TurnEnded(turn_id=turn_id, speaker=speaker, transcript=transcript, npc=npc,
                     outcome=outcome, reply_text=reply,
                     latency=TurnLatency(speech_end_ns=time.time_ns()))


def played(turn_id: str, npc: str, heard: str, complete: bool = True) -> Played:
    return Played(turn_id=turn_id, npc=npc, text_heard=heard, complete=complete,
                  first_played_ns=time.time_ns())


async def exchange(pool: AsyncConnectionPool, tenant: str, sid: str, turn_id: str,
                   player: str, reply: str, npc: str = "greta",
                   at: datetime | None = None) -> int:
    """One heard exchange stored as the recorder stores it."""
    async with pool.connection() as conn:
        found = await memory.SessionCampaigns().of(conn, tenant, sid)
        assert found is not None
        cid, campaign = found
        mid = await memory.record_exchange(
            conn, tenant, sid, turn_id, npc, campaign_id=cid, campaign=campaign,
            at=at or datetime.now(UTC), speaker="sam", player_text=player, npc_text=reply,
            heard=True)
    assert mid is not None
    return mid


# --- migration ------------------------------------------------------------------------------

async def test_migration_0008_makes_the_memory_tables_and_indexes(pool):
    [ext] = await rows(pool, "SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    assert ext["extversion"]
    indexes = {r["indexname"]: r["indexdef"] for r in await rows(
        pool, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN"
        " ('memories', 'npc_recaps', 'transcript_lines')")}
    assert "USING hnsw (embedding vector_cosine_ops)" in indexes["memories_embedding"]
    assert "USING gin (witnesses)" in indexes["memories_witnesses"]
    assert "USING gin (search)" in indexes["transcript_lines_search"]
    [col] = await rows(pool, "SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute"
                       " WHERE attrelid = 'memories'::regclass AND attname = 'embedding'")
    assert col["t"] == "vector(384)"
    [gen] = await rows(pool, "SELECT generation_expression AS g FROM information_schema.columns"
                       " WHERE table_name = 'transcript_lines' AND column_name = 'search'")
    assert "to_tsvector('simple'" in gen["g"]


# --- the recorder ---------------------------------------------------------------------------

@pytest.fixture
async def recording(nc, pool) -> AsyncIterator[Recorder]:
    js = nc.jetstream()
    await ensure_streams(js)
    recorder = Recorder(nc, pool, batch=16)
    task = asyncio.create_task(recorder.run())
    try:
        yield recorder
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def publish(nc, tenant: str, sid: str, *events: TurnEnded | Played) -> None:
    js, subjects = nc.jetstream(), SessionSubjects(tenant, sid)
    for event in events:
        await js.publish(subjects.ctl("turn" if isinstance(event, TurnEnded) else "played"),
                         event.to_bytes())


async def memories_of(pool, tenant: str, sid: str) -> dict[str, dict]:
    return {r["turn_id"]: r for r in await rows(
        pool, "SELECT turn_id, kind, speaker, npc, present, witnesses, player_text, npc_text, text,"
        " embedding FROM memories WHERE tenant_id = %s AND session_id = %s", tenant, sid)}


async def test_the_recorder_remembers_each_heard_exchange_once_with_who_witnessed_it(
        nc, pool, recording, tenant):
    overhearing = await new_tenant(pool, tenant)
    sid = await new_session(pool, tenant, overhearing)
    alone = overhearing.model_copy(update={"overhear": False})
    sid_alone = await new_session(pool, tenant, alone)

    events = [turn("sam-1", "greta", "Greta, we swore to hunt the red dragon.",
                   "Then I will forge you a spear."),
              played("sam-1", "greta", "Then I will forge you a spear."),
              turn("sam-2", "vex", "Vex, where do you sleep?", "Wherever the road ends."),
              turn("sam-3", None, "Let's go to the inn.", outcome="not_addressed"),
              turn("sam-4", "aldric", "Bless us, Aldric.", "I cannot.", outcome="muted")]
    await publish(nc, tenant, sid, *events)
    await publish(nc, tenant, sid, *events)  # redelivered: stored once
    await publish(nc, tenant, sid_alone, events[0], events[1])

    async def recorded() -> bool:
        return len(await memories_of(pool, tenant, sid)) == 2 and len(
            await memories_of(pool, tenant, sid_alone)) == 1
    await wait_for(recorded, 10)
    await asyncio.sleep(0.5)  # anything still coming would show now
    got = await memories_of(pool, tenant, sid)
    assert set(got) == {"sam-1", "sam-2"}  # not the table talk, not the muted turn
    greta = got["sam-1"]
    assert (greta["kind"], greta["speaker"], greta["npc"]) == ("exchange", "sam", "greta")
    assert greta["witnesses"] == ["greta", "tobias"] and greta["present"] == ["greta", "tobias"]
    assert greta["text"] == ("sam to Greta: Greta, we swore to hunt the red dragon.\n"
                             "Greta: Then I will forge you a spear.")
    assert greta["embedding"] is None  # the indexer embeds it
    assert got["sam-2"]["witnesses"] == ["vex"]  # no scene: overhears nobody, overheard by nobody
    assert (await memories_of(pool, tenant, sid_alone))["sam-1"]["witnesses"] == ["greta"]
    assert len(await rows(pool, "SELECT 1 FROM memories WHERE tenant_id = %s", tenant)) == 3
    # the very same messages written again (a redelivery after a crash before the ack)
    subjects = SessionSubjects(tenant, sid)
    again = [(None, parse(subjects.ctl(kind), event.to_bytes(), time.time()))
             for kind, event in (("turn", events[0]), ("played", events[1]))]
    await recording._write(again)  # type: ignore[arg-type]
    await recording._write(again[::-1])  # type: ignore[arg-type]
    assert await memories_of(pool, tenant, sid) == got


async def test_a_replay_is_recorded_but_never_remembered(nc, pool, recording, tenant):
    """A replay (``glyphoxa session replay``) re-runs a session to debug it: its turns are
    recorded like any session's, but the NPCs must not remember the session twice."""
    forge = await new_tenant(pool, tenant)
    sid = await new_session(pool, tenant, forge)
    replay = await new_session(pool, tenant, forge, replay_of=sid)
    events = [turn("sam-1", "greta", "Greta, we swore to hunt the red dragon.", "A spear, then."),
              played("sam-1", "greta", "A spear, then.")]
    await publish(nc, tenant, replay, *events)
    await publish(nc, tenant, sid, *events)

    async def recorded() -> bool:
        return len(await memories_of(pool, tenant, sid)) == 1 and len(await rows(
            pool, "SELECT 1 FROM turns WHERE tenant_id = %s AND session_id = %s", tenant, replay)) == 1
    await wait_for(recorded, 10)
    await asyncio.sleep(0.5)  # the replay's events came first: anything of theirs is stored
    assert await memories_of(pool, tenant, replay) == {}
    lines = await rows(pool, "SELECT role FROM transcript_lines WHERE tenant_id = %s"
                       " AND session_id = %s", tenant, replay)
    assert sorted(r["role"] for r in lines) == ["npc", "player"]  # its transcript is kept


async def test_a_cut_off_reply_is_remembered_only_as_far_as_it_was_heard_in_either_order(
        nc, pool, recording, tenant):
    campaign = await new_tenant(pool, tenant)
    sid = await new_session(pool, tenant, campaign)
    full = "The dragon sleeps under the mountain. Bring me its scale and I will pay."
    heard = "The dragon sleeps under the mountain."
    await publish(nc, tenant, sid,
                  turn("a-1", "greta", "Where is the dragon?", full),  # turn, then played
                  played("a-1", "greta", heard, complete=False),
                  played("a-2", "greta", heard, complete=False),  # played, then turn
                  turn("a-2", "greta", "Where is it, again?", full),
                  turn("a-3", "greta", "And the price?", "Ten gold.", outcome="cancelled"),
                  played("a-3", "greta", "Ten", complete=False),  # cancelled, heard a word
                  turn("a-4", "greta", "Anything else?", "Nothing.", outcome="cancelled"),
                  turn("a-5", "greta", "Hello?", "Hello there, traveller."),
                  played("a-5", "greta", "", complete=False),  # cut before a word
                  played("gm-6", "greta", "The forge roars.", complete=True),  # a GM's line
                  played("a-7", "greta", "", complete=True),  # heard whole, text unknown
                  turn("a-7", "greta", "Thanks!", "You are welcome."))

    async def recorded() -> bool:
        return len(await memories_of(pool, tenant, sid)) == 6
    await wait_for(recorded, 10)
    await asyncio.sleep(0.5)
    got = await memories_of(pool, tenant, sid)
    assert got["a-1"]["npc_text"] == heard and got["a-1"]["text"].endswith(f"Greta: {heard}")
    assert "Bring me" not in got["a-1"]["text"] and "Bring me" not in got["a-2"]["text"]
    assert got["a-2"]["npc_text"] == heard and got["a-2"]["player_text"] == "Where is it, again?"
    assert got["a-3"]["text"] == "sam to Greta: And the price?\nGreta: Ten"
    assert "a-4" not in got  # cancelled and nothing heard: not an exchange anyone had
    assert got["a-5"]["text"] == "sam to Greta: Hello?"  # the player's line, no reply heard
    assert got["gm-6"]["text"] == "Greta: The forge roars." and got["gm-6"]["speaker"] is None
    assert got["a-7"]["npc_text"] == "You are welcome."


async def test_a_gm_edit_survives_a_redelivered_event(nc, pool, recording, tenant):
    campaign = await new_tenant(pool, tenant)
    sid = await new_session(pool, tenant, campaign)
    events = (turn("e-1", "greta", "Is the sword cursed?", "No."), played("e-1", "greta", "No."))
    await publish(nc, tenant, sid, *events)
    await wait_for(lambda: _count(pool, tenant, sid, 1), 10)
    [mid] = [r["id"] for r in await rows(pool, "SELECT id FROM memories WHERE tenant_id = %s", tenant)]
    await memory.edit_memory(pool, tenant, "forge", mid, "Greta lied: the sword IS cursed.", "tenant:gm")
    await publish(nc, tenant, sid, *events)
    await asyncio.sleep(1.0)
    [row] = await rows(pool, "SELECT text, edited_by FROM memories WHERE tenant_id = %s", tenant)
    assert row == {"text": "Greta lied: the sword IS cursed.", "edited_by": "tenant:gm"}


async def _has(found, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await found) == n


async def _count(pool, tenant: str, sid: str, n: int) -> bool:
    return len(await memories_of(pool, tenant, sid)) == n


async def test_a_bad_event_is_parked_and_remembers_nothing(nc, pool, recording, tenant):
    campaign = await new_tenant(pool, tenant)
    sid = await new_session(pool, tenant, campaign)
    bad = turn("b-1", "greta", "Greta\u0000?", "Yes.")  # PostgreSQL refuses NUL in text
    await publish(nc, tenant, sid, bad, played("b-1", "greta", "Yes."),
                  turn("b-2", "greta", "Fine then.", "Good."))
    await publish(nc, tenant, "nosuchsession", turn("b-3", "greta", "Who am I?", "Nobody."))

    async def parked() -> list[dict]:
        return await rows(pool, "SELECT subject, reason FROM parked_events WHERE subject LIKE %s"
                          " ORDER BY subject", f"%.{tenant}.%")
    await wait_for(lambda: _has(parked(), 2), 10)
    await wait_for(lambda: _count(pool, tenant, sid, 2), 10)
    bad_one, unknown = sorted(await parked(), key=lambda r: "nosuchsession" in r["subject"])
    assert sid in bad_one["subject"] and "refused" in bad_one["reason"]
    assert "nosuchsession" in unknown["subject"] and "session" in unknown["reason"]
    got = await memories_of(pool, tenant, sid)
    assert got["b-1"]["text"] == "Greta: Yes."  # the played line alone; the turn was parked
    assert got["b-2"]["text"] == "sam to Greta: Fine then.\nGreta: Good."
    assert await rows(pool, "SELECT 1 FROM memories WHERE session_id = 'nosuchsession'") == []


# --- indexer and recall ---------------------------------------------------------------------

async def index_all(pool, embedder: HashEmbedder, batch: int = 32) -> int:
    """Embed every pending row (of every test's tenants: the indexer is not per tenant)."""
    indexer, steps = memory.MemoryIndexer(pool, embedder, batch=batch), 0
    while await indexer.step():
        steps += 1
    assert indexer.embedded >= 1 or steps == 0
    return indexer.embedded


async def test_recall_returns_what_the_npc_witnessed_and_never_another_npcs_memory(
        pool, tenant, memory_dsn):
    campaign = await new_tenant(pool, tenant)
    sid = await new_session(pool, tenant, campaign)
    embedder = HashEmbedder()
    await exchange(pool, tenant, sid, "r-1", "Greta, the red dragon took my sister.",
                   "Then we hunt the red dragon together.")
    await exchange(pool, tenant, sid, "r-2", "Aldric, the red dragon took my sister.",
                   "Pray with me for her.", npc="aldric")
    await exchange(pool, tenant, sid, "r-3", "Greta, how much for horseshoes?", "Two silver.")
    fact = await memory.teach_fact(pool, tenant, "forge", "vex", "Vex owes the red dragon cult money.",
                                   "tenant:gm")
    await index_all(pool, embedder, batch=2)
    query = embedder.vector("what about the red dragon")

    greta = await memory.recall(pool, tenant, "forge", "greta", query, embedder.name, k=5)
    assert [m.turn_id for m in greta][0] == "r-1" and {m.turn_id for m in greta} == {"r-1", "r-3"}
    assert greta[0].session == sid and greta[0].kind == "exchange" and greta[0].score > greta[1].score
    tobias = await memory.recall(pool, tenant, "forge", "tobias", query, embedder.name)
    assert [m.turn_id for m in tobias] == ["r-1", "r-3"]  # overheard in the smithy
    aldric = await memory.recall(pool, tenant, "forge", "aldric", query, embedder.name)
    assert [m.turn_id for m in aldric] == ["r-2"]  # never Greta's, the chapel is not the smithy
    vex = await memory.recall(pool, tenant, "forge", "vex", query, embedder.name)
    assert [(m.kind, m.id) for m in vex] == [("fact", fact["id"])]
    # only vectors of the embedder asked about count
    assert await memory.recall(pool, tenant, "forge", "greta", query, "other-model") == []

    # the turn path's runner: recall's own blocking connection, in a worker thread
    with psycopg.connect(memory_dsn) as conn:
        memory.configure_recall_connection(conn)
        for npc, found in (("greta", greta), ("tobias", tobias), ("aldric", aldric), ("vex", vex)):
            same = await asyncio.to_thread(memory.recall_sync, conn, tenant, "forge", npc, query,
                                           embedder.name)
            assert [(m.id, m.kind, m.text, m.similarity) for m in same] == [
                (m.id, m.kind, m.text, m.similarity) for m in found]
    assert [m.id for m in await memory.recall(pool, tenant, "forge", "greta", query, embedder.name, k=1)] == [greta[0].id]


async def test_recency_breaks_ties_and_similarity_wins_over_recency(pool, tenant):
    campaign = await new_tenant(pool, tenant)
    sid = await new_session(pool, tenant, campaign)
    now = datetime.now(UTC)
    embedder = HashEmbedder()
    old = await exchange(pool, tenant, sid, "old", "The mine is flooded.", "Aye.", at=now - timedelta(days=60))
    new = await exchange(pool, tenant, sid, "new", "The mine is flooded.", "Aye.", at=now - timedelta(days=1))
    apt = await exchange(pool, tenant, sid, "apt", "Who guards the northern bridge at night?",
                         "The twins.", at=now - timedelta(days=90))
    await index_all(pool, embedder)
    mine = await memory.recall(pool, tenant, "forge", "greta", embedder.vector("is the mine flooded"),
                               embedder.name, now=now)
    assert [m.id for m in mine[:2]] == [new, old]
    assert mine[0].similarity == pytest.approx(mine[1].similarity)
    assert mine[0].score - mine[1].score == pytest.approx(
        0.15 * (math.exp(-1 / 30) - math.exp(-60 / 30)), abs=1e-3)
    bridge = await memory.recall(pool, tenant, "forge", "greta",
                                 embedder.vector("who guards the northern bridge at night"),
                                 embedder.name, now=now)
    assert bridge[0].id == apt  # 90 days old, but what was asked about


async def test_recall_is_never_a_prepared_statement_so_it_keeps_its_hnsw_plan(memory_dsn, tenant):
    """psycopg prepares a query on its fifth run on a connection; PostgreSQL may then use a
    generic plan, which cannot order by the HNSW index for an unknown vector and sorts every
    witnessed row (44 ms instead of 2.4 ms at 29,000 memories: docs/benchmarks.md part 8).
    Recall asks on one connection many times, as session-control's pool does, and must
    still be planned for its vector each time."""
    one = AsyncConnectionPool(memory_dsn, min_size=1, max_size=1, open=False,
                              kwargs={"row_factory": dict_row, "autocommit": True})
    await one.open(wait=True)
    try:
        campaign = await new_tenant(one, tenant)
        sid = await new_session(one, tenant, campaign)
        embedder = HashEmbedder()
        await exchange(one, tenant, sid, "p-1", "Greta, the red dragon took my sister.", "We hunt it.")
        await index_all(one, embedder)
        for n in range(12):
            found = await memory.recall(one, tenant, "forge", "greta",
                                        embedder.vector(f"the red dragon {n}"), embedder.name)
            assert [m.turn_id for m in found] == ["p-1"]
        async with one.connection() as conn:
            cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
            prepared = [r["statement"] for r in await cur.fetchall()]
        assert prepared and not [s for s in prepared if "FROM memories" in s and "<=>" in s], prepared
    finally:
        await one.close()


async def test_the_indexer_re_embeds_edited_and_other_model_rows(pool, tenant):
    campaign = await new_tenant(pool, tenant)
    sid = await new_session(pool, tenant, campaign)
    mid = await exchange(pool, tenant, sid, "i-1", "The key is under the anvil.", "Hush.")
    first = HashEmbedder("model-a")
    indexer = memory.MemoryIndexer(pool, first, idle_s=0.05)
    task = asyncio.create_task(indexer.run())
    try:
        async def embedded_by(model: str, text_has: str) -> bool:
            found = await rows(pool, "SELECT embed_model, text FROM memories WHERE tenant_id = %s"
                               " AND id = %s AND embedding IS NOT NULL", tenant, mid)
            return bool(found) and found[0]["embed_model"] == model and text_has in found[0]["text"]
        await wait_for(lambda: embedded_by("model-a", "anvil"), 10)
        await memory.edit_memory(pool, tenant, "forge", mid, "The key is under the bellows.", "tenant:gm")
        await wait_for(lambda: embedded_by("model-a", "bellows"), 10)
        hit = await memory.recall(pool, tenant, "forge", "greta",
                                  first.vector("The key is under the bellows."), "model-a")
        assert hit[0].id == mid and hit[0].similarity == pytest.approx(1.0, abs=1e-5)
    finally:
        await indexer.close()
        await asyncio.wait_for(task, 5)
    # another embedder: the rows of model-a are embedded again with it
    second = HashEmbedder("model-b")
    indexer = memory.MemoryIndexer(pool, second, batch=1000)
    while await indexer.step():
        pass
    assert await rows(pool, "SELECT 1 FROM memories WHERE tenant_id = %s AND embed_model <> 'model-b'",
                      tenant) == []


async def test_the_indexer_waits_out_a_database_restart_and_an_embedder_failure():
    """Its own PostgreSQL (the tests' shared one must not go down): stopped under the running
    indexer, which backs off and embeds what came in once the server is back."""
    from glyphoxa_cli.postgres import PostgresServer

    base = Path(tempfile.mkdtemp(prefix="glyphoxa-pg-mem-"))
    base.chmod(0o755)
    server = PostgresServer(base / "data", fast=True).start()
    try:
        dsn = fresh_database(server.dsn())
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await migrate(conn, load_migrations(files("glyphoxa_session_control") / "migrations"))
        p = AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False, timeout=2,
                                kwargs={"row_factory": dict_row, "autocommit": True})
        await p.open(wait=True)
        tenant = "t" + uuid.uuid4().hex[:8]
        campaign = await new_tenant(p, tenant)
        sid = await new_session(p, tenant, campaign)
        embedder = HashEmbedder()
        indexer = memory.MemoryIndexer(p, embedder, idle_s=0.05, max_backoff_s=0.5)
        task = asyncio.create_task(indexer.run())
        try:
            await exchange(p, tenant, sid, "d-1", "Before the outage.", "Aye.")
            await wait_for(lambda: _all_embedded(p, 1), 10)
            server.stop()
            await asyncio.sleep(1.5)  # the indexer meets the outage and backs off
            assert not task.done()
            server.start()
            await exchange(p, tenant, sid, "d-2", "After the outage.", "Aye.")
            await wait_for(lambda: _all_embedded(p, 2), 20)
            embedder.fail = True
            await exchange(p, tenant, sid, "d-3", "While the embedder fails.", "Aye.")
            await asyncio.sleep(1.0)
            assert not task.done() and not await _all_embedded(p, 3)
            embedder.fail = False
            await wait_for(lambda: _all_embedded(p, 3), 10)
        finally:
            await indexer.close()
            await asyncio.wait_for(task, 5)
            await p.close()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


async def _all_embedded(pool, n: int) -> bool:
    try:
        found = await rows(pool, "SELECT count(*) FILTER (WHERE embedding IS NOT NULL) AS done,"
                           " count(*) AS n FROM memories")
    except psycopg.OperationalError:
        return False
    return found[0] == {"done": n, "n": n}


# --- the GM's side --------------------------------------------------------------------------

async def add_line(pool, tenant: str, sid: str, turn_id: str, role: str, speaker: str, text: str,
                   spoken_ns: int) -> None:
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO transcript_lines (tenant_id, session_id, turn_id, role, speaker,"
                           " text, spoken_ns) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                           (tenant, sid, turn_id, role, speaker, text, spoken_ns))


async def test_search_finds_lines_across_sessions_newest_first_and_pages_on(pool, tenant):
    campaign = await new_tenant(pool, tenant)
    s1, s2 = await new_session(pool, tenant, campaign), await new_session(pool, tenant, campaign)
    other = await new_session(pool, tenant, campaign, cid="elsewhere")
    t0 = 1_700_000_000 * 10**9
    await add_line(pool, tenant, s1, "x-1", "player", "sam", "We swore to slay the dragon.", t0)
    await add_line(pool, tenant, s1, "x-1", "npc", "greta", "Dragons die hard, lad.", t0 + 10**9)
    await add_line(pool, tenant, s2, "y-1", "player", "ana", "Is the DRAGON still alive?", t0 + 86400 * 10**9)
    await add_line(pool, tenant, s2, "y-2", "player", "ana", "Nothing about that beast.", t0 + 86401 * 10**9)
    await add_line(pool, tenant, other, "z-1", "player", "ana", "dragon in another campaign", t0 + 10**12)
    hits = await memory.search_transcripts(pool, tenant, "forge", "dragon")
    assert [(h.session, h.turn_id, h.role) for h in hits] == [(s2, "y-1", "player"), (s1, "x-1", "player")]
    assert hits[0].speaker == "ana" and hits[0].at == datetime.fromtimestamp((t0 + 86400 * 10**9) / 1e9, UTC)
    page = await memory.search_transcripts(pool, tenant, "forge", "dragon", limit=1)
    assert [h.turn_id for h in page] == ["y-1"]
    rest = await memory.search_transcripts(pool, tenant, "forge", "dragon", before=page[-1].at)
    assert [h.turn_id for h in rest] == ["x-1"]
    assert [h.turn_id for h in await memory.search_transcripts(pool, tenant, "forge", '"slay the dragon"')] == ["x-1"]
    assert [h.turn_id for h in await memory.search_transcripts(pool, tenant, "forge", "dragon -slay")] == ["y-1"]
    with pytest.raises(Invalid, match="q: must not be empty"):
        await memory.search_transcripts(pool, tenant, "forge", "  ")
    with pytest.raises(NotFound):
        await memory.search_transcripts(pool, tenant, "elsewhere", "dragon")


async def test_another_tenant_never_sees_or_changes_this_tenants_memory(pool, tenant):
    other = "t" + uuid.uuid4().hex[:10]
    campaign = await new_tenant(pool, tenant)
    await new_tenant(pool, other)  # the same campaign id and NPC names, in its own namespace
    sid = await new_session(pool, tenant, campaign)
    embedder = HashEmbedder()
    mid = await exchange(pool, tenant, sid, "p-1", "The password is swordfish.", "Swordfish it is.")
    fact = await memory.teach_fact(pool, tenant, "forge", "greta", "The vault code is 4242.", "gm")
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO npc_recaps (tenant_id, campaign_id, session_id, npc, status, text)"
                           " VALUES (%s, 'forge', %s, 'greta', 'done', 'Greta made a spear.')", (tenant, sid))
        await conn.execute("INSERT INTO transcript_lines (tenant_id, session_id, turn_id, role, speaker,"
                           " text, spoken_ns) VALUES (%s, %s, 'p-1', 'player', 'sam', 'swordfish', 1)",
                           (tenant, sid))
    [recap] = await memory.list_recaps(pool, tenant, "forge", "greta")
    await index_all(pool, embedder)
    query = embedder.vector("password swordfish")
    assert len(await memory.recall(pool, tenant, "forge", "greta", query, embedder.name)) == 2
    assert await memory.recall(pool, other, "forge", "greta", query, embedder.name) == []
    assert await memory.search_transcripts(pool, other, "forge", "swordfish") == []
    assert await memory.list_memories(pool, other, "forge", "greta") == []
    assert await memory.list_facts(pool, other, "forge", "greta") == []
    assert await memory.list_recaps(pool, other, "forge", "greta") == []
    assert await memory.session_seed(pool, other, "forge") == ({}, {})
    for attempt in (memory.edit_memory(pool, other, "forge", mid, "hijacked", "x"),
                    memory.delete_memory(pool, other, "forge", mid, "x"),
                    memory.delete_memory(pool, other, "forge", fact["id"], "x", kind="fact", npc="greta"),
                    memory.edit_recap(pool, other, "forge", recap["id"], "hijacked", "x"),
                    memory.delete_recap(pool, other, "forge", recap["id"], "x")):
        with pytest.raises(NotFound):
            await attempt
    assert len(await memory.list_memories(pool, tenant, "forge", "greta")) == 2
    assert await memory.session_seed(pool, tenant, "forge") == (
        {"greta": "Greta made a spear."}, {"greta": ["The vault code is 4242."]})


async def test_facts_recaps_and_the_session_seed(pool, tenant):
    campaign = await new_tenant(pool, tenant)
    s1, s2 = await new_session(pool, tenant, campaign), await new_session(pool, tenant, campaign)
    for n in range(25):
        await memory.teach_fact(pool, tenant, "forge", "greta", f"fact number {n}", "tenant:gm")
    with pytest.raises(NotFound, match="no NPC 'nobody' in campaign 'forge'"):
        await memory.teach_fact(pool, tenant, "forge", "nobody", "x", "tenant:gm")
    with pytest.raises(Invalid, match="text: at most 300"):
        await memory.teach_fact(pool, tenant, "forge", "greta", "x" * 301, "tenant:gm")
    async with pool.connection() as conn:
        for sid, status, text in ((s1, "done", "Session one."), (s2, "done", "Session two.")):
            await conn.execute("INSERT INTO npc_recaps (tenant_id, campaign_id, session_id, npc, status,"
                               " text) VALUES (%s, 'forge', %s, 'greta', %s, %s)", (tenant, sid, status, text))
        await conn.execute("INSERT INTO npc_recaps (tenant_id, campaign_id, session_id, npc, status)"
                           " VALUES (%s, 'forge', %s, 'tobias', 'failed')", (tenant, s2))
    recaps, facts = await memory.session_seed(pool, tenant, "forge")
    assert recaps == {"greta": "Session two."}  # the failed one of tobias: nothing
    assert facts == {"greta": [f"fact number {n}" for n in range(5, 25)]}  # the newest 20, oldest first
    [tobias] = await memory.list_recaps(pool, tenant, "forge", "tobias")
    edited = await memory.edit_recap(pool, tenant, "forge", tobias["id"], "Tobias swept.", "tenant:gm")
    assert (edited["status"], edited["text"], edited["edited_by"]) == ("done", "Tobias swept.", "tenant:gm")
    assert (await memory.session_seed(pool, tenant, "forge"))[0]["tobias"] == "Tobias swept."
    actions = [r["action"] for r in await rows(pool, "SELECT action FROM audit_log WHERE tenant_id = %s"
                                                     " ORDER BY id", tenant)]
    assert actions.count("fact.teach") == 25 and actions[-1] == "recap.edit"


async def test_deleting_a_campaign_deletes_its_memory_and_replacing_it_keeps_it(pool, tenant):
    campaign = await new_tenant(pool, tenant)
    sid = await new_session(pool, tenant, campaign)
    await exchange(pool, tenant, sid, "c-1", "Remember me.", "Always.")
    await memory.teach_fact(pool, tenant, "forge", "greta", "A fact.", "gm")
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO npc_recaps (tenant_id, campaign_id, session_id, npc, status, text)"
                           " VALUES (%s, 'forge', %s, 'greta', 'done', 'A recap.')", (tenant, sid))
    campaigns = Campaigns(pool)
    changed = campaign.model_copy(update={"lore": "New lore.", "overhear": False})
    await campaigns.create(tenant, changed, "gm", cid="forge", replace=True)
    stored = await campaigns.get(tenant, "forge")
    assert (stored.lore, stored.overhear) == ("New lore.", False)  # kept since migration 0008
    count = "SELECT (SELECT count(*) FROM memories WHERE tenant_id = %s) + (SELECT count(*) FROM npc_recaps WHERE tenant_id = %s) AS n"
    assert (await rows(pool, count, tenant, tenant))[0]["n"] == 3
    await campaigns.delete(tenant, "forge", "gm")
    assert (await rows(pool, count, tenant, tenant))[0]["n"] == 0
    # the sessions (and their transcripts) stay: sessions have no foreign key to campaigns
    assert len(await rows(pool, "SELECT 1 FROM sessions WHERE tenant_id = %s", tenant)) == 1


async def test_a_vector_must_have_384_finite_numbers():
    with pytest.raises(ValueError, match="384 dimensions, not 3"):
        memory.vector_literal([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        memory.vector_literal([float("nan")] * 384)
    assert memory.vector_literal([0.5] * 384).count(",") == 383
