#!/usr/bin/env python3
"""What a long campaign's memory costs: rows, bytes and query time for a campaign of 50
sessions of 4 hours (issue 16), generated into a fresh PostgreSQL 18 with pgvector.

    .venv/bin/python scripts/bench_memory_growth.py [--sessions 50] [--hours 4]
        [--exchange-s 25] [--distinct 6000] [--queries 300] [--no-e2e]

1. **Generate.** One campaign (8 NPCs in 4 scenes and one without, ``overhear: true``, 4
   players), ``--sessions`` sessions a week apart (so ``spoken_at`` spans most of a year), each
   ``--hours`` of play with one addressed exchange every ``--exchange-s`` seconds on average
   (exponential gaps). Per exchange: a ``turns`` row, two ``transcript_lines`` (the player's
   line and the NPC's heard reply) and a ``memories`` row with its witnesses, as the recorder
   writes them, and an embedding. The lines are composed from phrase lists (player lines of
   40-200 characters, replies of 1-3 sentences). ``--distinct`` (4000) exchanges are embedded for
   real with the local embedder (MiniLM int8, in batches of 32 as the indexer does, on every core); every other
   exchange repeats one of them (same NPC, speaker and text) with its vector perturbed by
   gaussian noise (sigma 0.01 a dimension, renormalised: cosine ~0.98 to the original), so
   the HNSW graph holds as many distinct points as rows. Rows go in by COPY; the HNSW index
   is built after the load (with the migration's definition), the other indexes during it.
2. **Size.** Rows; heap, TOAST and each index of ``memories``, ``transcript_lines`` and
   ``turns`` (``pg_relation_size``), totals (``pg_total_relation_size``).
3. **Recall** (``glyphoxa_session_control.memory.recall``, k=5, the function session-control
   answers npc-brain with): ``--queries`` player lines (not in the data), each embedded for
   real one at a time and asked of an NPC drawn as the data's NPCs are addressed; p50/p95/max
   cold-ish (the first pass right after PostgreSQL restarted: its buffers empty, the OS page
   cache not dropped) and warm (a second pass), at ``hnsw.ef_search`` 40 (pgvector's default),
   100 and 200, and exact (the HNSW index not used: the witnesses GIN index and a sort), with
   how many of the exact top 5 each setting finds.
4. **Transcript search** (``memory.search_transcripts``, 50 hits, newest first): p50/p95
   over words, names, phrases and exclusions.
5. **Through NATS** (unless ``--no-e2e``): a real session-control process (with its local
   embedder) on this database; the bench asks ``glxapi.memory.recall`` as npc-brain does and
   times the round trip (embedding + query + bus).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path

import numpy as np
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glyphoxa_campaign import Campaign  # noqa: E402
from glyphoxa_cli.postgres import PostgresServer, create_database  # noqa: E402
from glyphoxa_memory.local import LocalEmbedder  # noqa: E402
from glyphoxa_pg.migrations import load_migrations, migrate  # noqa: E402
from glyphoxa_session_control import memory  # noqa: E402
from glyphoxa_session_control.campaigns import Campaigns  # noqa: E402

TENANT, CAMPAIGN = "growth", "emberfall"
CAMPAIGN_BODY = {
    "name": "Emberfall",
    "overhear": True,
    "lore": "The town of Emberfall sits under a sleeping volcano; a dragon was seen in the north.",
    "npcs": [
        {"name": "Greta", "persona": "A gruff dwarven blacksmith.", "scene": "smithy"},
        {"name": "Tobias", "persona": "Her nervous apprentice.", "scene": "smithy"},
        {"name": "Aldric", "persona": "The town's priest.", "scene": "chapel"},
        {"name": "Maren", "persona": "A sister of the chapel.", "scene": "chapel"},
        {"name": "Bram", "persona": "The innkeeper of the Copper Kettle.", "scene": "tavern"},
        {"name": "Lysa", "persona": "A barmaid who hears everything.", "scene": "tavern"},
        {"name": "Mora", "persona": "Captain of the town guard.", "scene": "gate"},
        {"name": "Vex", "persona": "A wanderer who belongs nowhere."},
    ],
}
# how often each NPC is addressed (a campaign has its regulars)
NPC_WEIGHTS = {"greta": 0.24, "bram": 0.2, "aldric": 0.12, "mora": 0.12, "lysa": 0.1,
               "tobias": 0.08, "vex": 0.08, "maren": 0.06}
PLAYERS = ["sam", "alex", "jo", "riley"]

OPENERS = ["", "Listen, ", "So, ", "Right, ", "Hey, ", "Be honest with us, ", "One more thing: ",
           "Before we go, ", "Quick question, ", "Sorry to bother you, "]
ASKS = [
    "how much for {item}", "have you seen {person} pass through here", "what do you know about {place}",
    "could you take a look at {item}", "do you remember what we promised you about {thing}",
    "who told you about {thing}", "can you keep {item} safe for us until we come back",
    "is it true that {person} was seen near {place}", "what happened at {place} last winter",
    "would you trade {item} for news about {thing}", "why does everyone fear {place}",
    "where can we find {person}", "we found {item} near {place}, is it yours",
    "did {person} leave anything for us", "what would it take to get into {place}",
    "tell me again about {thing}", "have you heard anything about {thing} since our last visit",
]
ITEMS = ["the longsword", "this old amulet", "my broken shield", "the silver dagger",
         "a map of the mines", "the red lantern", "these dwarven gauntlets", "the sealed letter",
         "a crate of arrows", "the bone flute", "the iron key", "an unmarked ring",
         "the captain's spyglass", "two healing potions", "a scroll of warding"]
PERSONS = ["a hooded stranger", "the mayor's son", "an elven courier", "the old hermit",
           "a woman with a scarred face", "the tax collector", "three dwarves from the south",
           "the missing acolyte", "a bard called Pell", "the Black Hound's leader"]
PLACES = ["the ruins north of the river", "the old mine", "the chapel crypt", "the docks",
          "the Whispering Wood", "the watchtower on the ridge", "the volcano's mouth",
          "the sewers under the market", "the abandoned mill", "the dragon's pass"]
THINGS = ["the dragon", "the lost crown of the old king", "the fire in the granary",
          "the cult of the ember eye", "the festival", "the stolen relic", "the plague ship",
          "the debt we owe you", "the map to the sunken vault", "the duke's wedding"]
TAILS = ["", "", " We're in a hurry.", " And don't tell the guards.",
         " I'm asking because the road ahead looks dangerous and we'd rather know what waits for us.",
         " We paid you well last time, so I hope you remember.", " It matters more than you think.",
         " The others are waiting outside."]
REPLIES = [
    "Hmph. {price} gold, and not a copper less.", "I might have seen something like that.",
    "Aye, I remember. You don't forget a thing like that.", "Keep your voice down, friend.",
    "That's a dangerous question to ask in this town.", "Ask me again after sundown.",
    "I told you everything I know the last time you were here.",
    "The road to {place} isn't what it used to be.", "Talk to {person}; they know more than I do.",
    "I won't pretend I'm not curious about {thing}.", "Bring me {item} and we'll talk.",
    "Nobody's been near {place} since the fire.", "You're the third one asking about {thing} this week.",
    "Fine. But you owe me one.", "I'd stay away from {place}, if I were you.",
    "{person} came by two days ago, asking the same.", "Some things are better left buried.",
]


def rng_text(rng: np.random.Generator, template: str) -> str:
    return template.format(item=rng.choice(ITEMS), person=rng.choice(PERSONS),
                           place=rng.choice(PLACES), thing=rng.choice(THINGS),
                           price=int(rng.integers(5, 200)))


def player_line(rng: np.random.Generator, npc: str) -> str:
    ask = rng_text(rng, str(rng.choice(ASKS)))
    opener = str(rng.choice(OPENERS))
    line = f"{opener}{npc}, {ask}?" if rng.random() < 0.6 else f"{opener}{ask}, {npc}?"
    return (line[0].upper() + line[1:] + str(rng.choice(TAILS))).strip()


def npc_reply(rng: np.random.Generator) -> str:
    n = int(rng.choice([1, 2, 2, 3]))
    return " ".join(rng_text(rng, str(rng.choice(REPLIES))) for _ in range(n))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


class Data:
    """The generated campaign: per exchange (session index, time, npc, speaker, template)."""

    def __init__(self, args: argparse.Namespace, campaign: Campaign):
        rng = np.random.default_rng(args.seed)
        self.campaign = campaign
        self.names = {n.token: n.name for n in campaign.npcs}  # type: ignore[attr-defined]
        tokens = list(NPC_WEIGHTS)
        weights = np.asarray([NPC_WEIGHTS[t] for t in tokens])
        self.npc_tokens, self.npc_p = tokens, weights / weights.sum()
        # the distinct exchanges that are embedded for real
        self.templates: list[tuple[str, str, str, str, str]] = []  # npc, speaker, player, reply, text
        seen: set[str] = set()
        while len(self.templates) < args.distinct:
            npc = str(rng.choice(tokens, p=self.npc_p))
            speaker = str(rng.choice(PLAYERS))
            player, reply = player_line(rng, self.names[npc]), npc_reply(rng)
            text = memory.exchange_text(campaign, npc, speaker, player, reply)
            if text in seen:
                continue
            seen.add(text)
            self.templates.append((npc, speaker, player, reply, text))
        by_npc: dict[str, list[int]] = {}
        for i, t in enumerate(self.templates):
            by_npc.setdefault(t[0], []).append(i)
        # the sessions: weekly, the last one a week ago
        first = datetime.now(UTC).replace(hour=18, minute=0, second=0, microsecond=0) \
            - timedelta(weeks=args.sessions)
        self.sessions: list[tuple[str, datetime]] = []
        self.exchanges: list[tuple[int, datetime, int]] = []  # session index, at, template
        used: set[int] = set()
        for s in range(args.sessions):
            start = first + timedelta(weeks=s)
            self.sessions.append((f"s{s + 1:03d}", start))
            t = float(rng.exponential(args.exchange_s))
            while t < args.hours * 3600:
                npc = str(rng.choice(tokens, p=self.npc_p))
                pool = by_npc[npc]
                # each template first once, then repeats (with a perturbed vector)
                fresh = [i for i in pool[:50] if i not in used]
                idx = fresh[0] if fresh else int(pool[int(rng.integers(len(pool)))])
                if idx not in used:
                    used.add(idx)
                    by_npc[npc] = [i for i in pool if i != idx] + [idx]
                self.exchanges.append((s, start + timedelta(seconds=t), idx))
                t += float(rng.exponential(args.exchange_s))
        self.queries = [(str(rng.choice(tokens, p=self.npc_p)), "") for _ in range(args.queries)]
        self.queries = [(npc, player_line(rng, self.names[npc])) for npc, _ in self.queries]


def embed_templates(embedder: LocalEmbedder, texts: list[str]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    out = [embedder.embed_sync(texts[n:n + 32]) for n in range(0, len(texts), 32)]
    return np.concatenate(out).astype(np.float32), time.perf_counter() - started


def vector_text(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6g}" for x in v) + "]"


def load(dsn: str, data: Data, vectors: np.ndarray, model: str, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed + 1)
    took: dict[str, float] = {}
    snapshot = Jsonb(data.campaign.model_dump(mode="json"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute("DROP INDEX memories_embedding")
        with conn.cursor().copy("COPY sessions (tenant_id, id, campaign_id, campaign, edge, state,"
                                " created_at, started_at, ended_at) FROM STDIN") as copy:
            for sid, start in data.sessions:
                copy.write_row((TENANT, sid, CAMPAIGN, snapshot, "discord", "ended", start, start,
                                start + timedelta(hours=4)))
        with conn.cursor().copy("COPY turns (tenant_id, session_id, turn_id, speaker, npc, outcome,"
                                " transcript, latency, speech_end_ns, recorded_at) FROM STDIN") as copy:
            for n, (s, at, idx) in enumerate(data.exchanges):
                npc, speaker, player, _, _ = data.templates[idx]
                copy.write_row((TENANT, data.sessions[s][0], f"{speaker}-{n}", speaker, npc,
                                "answered", player, Jsonb({}), int(at.timestamp() * 1e9), at))
        with conn.cursor().copy("COPY transcript_lines (tenant_id, session_id, turn_id, role, speaker,"
                                " text, complete, spoken_ns) FROM STDIN") as copy:
            for n, (s, at, idx) in enumerate(data.exchanges):
                npc, speaker, player, reply, _ = data.templates[idx]
                ns = int(at.timestamp() * 1e9)
                copy.write_row((TENANT, data.sessions[s][0], f"{speaker}-{n}", "player", speaker,
                                player, True, ns))
                copy.write_row((TENANT, data.sessions[s][0], f"{speaker}-{n}", "npc", npc, reply,
                                True, ns + 2_000_000_000))
        took["sessions, turns, transcript_lines"] = time.perf_counter() - started
        started = time.perf_counter()
        seen: set[int] = set()
        with conn.cursor().copy("COPY memories (tenant_id, campaign_id, session_id, turn_id, kind,"
                                " speaker, npc, present, witnesses, player_text, npc_text, played,"
                                " text, spoken_at, embedding, embed_model) FROM STDIN") as copy:
            for n, (s, at, idx) in enumerate(data.exchanges):
                npc, speaker, player, reply, text = data.templates[idx]
                v = vectors[idx]
                if idx in seen:
                    v = v + rng.normal(0, 0.01, v.shape).astype(np.float32)
                    v /= np.linalg.norm(v)
                seen.add(idx)
                present = list(data.campaign.present_with(npc))
                copy.write_row((TENANT, CAMPAIGN, data.sessions[s][0], f"{speaker}-{n}",
                                "exchange", speaker, npc, present,
                                list(data.campaign.witnesses(npc)), player, reply, True, text, at,
                                vector_text(v), model))
        took["memories (COPY, btree and GIN indexes)"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute("CREATE INDEX memories_embedding ON memories USING hnsw (embedding vector_cosine_ops)")
        took["HNSW index build"] = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE memories")
        conn.execute("VACUUM ANALYZE transcript_lines")
        conn.execute("VACUUM ANALYZE turns")
    return took


def sizes(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        for table in ("memories", "transcript_lines", "turns"):
            row = conn.execute(
                "SELECT (SELECT count(*) FROM " + table + ") AS n, pg_relation_size(c.oid) AS heap,"
                " coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast,"
                " pg_indexes_size(c.oid) AS indexes, pg_total_relation_size(c.oid) AS total"
                " FROM pg_class c WHERE c.relname = %s", (table,)).fetchone()
            assert row is not None
            print(f"  {table}: {row['n']:,} rows; total {fmt_bytes(row['total'])} = heap "
                  f"{fmt_bytes(row['heap'])} + TOAST {fmt_bytes(row['toast'])} + indexes "
                  f"{fmt_bytes(row['indexes'])} ({row['total'] / max(1, row['n']):,.0f} bytes a row)")
            for ix in conn.execute(
                    "SELECT i.relname AS name, pg_relation_size(i.oid) AS size FROM pg_index x"
                    " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
                    " WHERE t.relname = %s ORDER BY size DESC", (table,)).fetchall():
                print(f"      index {ix['name']}: {fmt_bytes(ix['size'])}")
        db = conn.execute("SELECT pg_database_size(current_database()) AS b").fetchone()
        assert db is not None
        print(f"  the whole database: {fmt_bytes(db['b'])}")


async def recall_pass(dsn: str, model: str, queries: list[tuple[str, np.ndarray]],
                      settings: dict[str, str], prepare_threshold: int | None = 5,
                      ) -> tuple[list[float], list[list[int]]]:
    """Each query through ``memory.recall`` on a pool like session-control's (psycopg's
    default ``prepare_threshold``, 5: a query run that often becomes a prepared statement)."""
    async def configure(conn: psycopg.AsyncConnection) -> None:
        for name, value in settings.items():
            await conn.execute(f"SET {name} = {value}")
    pool = AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False, configure=configure,
                               kwargs={"autocommit": True, "prepare_threshold": prepare_threshold})
    await pool.open(wait=True)
    took, found = [], []
    try:
        for npc, vector in queries:
            started = time.perf_counter()
            rows = await memory.recall(pool, TENANT, CAMPAIGN, npc, vector, model, k=5)
            took.append((time.perf_counter() - started) * 1000)
            found.append([r.id for r in rows])
    finally:
        await pool.close()
    return took, found


async def search_pass(dsn: str, words: list[str], prepare_threshold: int | None = 5,
                      ) -> tuple[list[float], list[int]]:
    pool = AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False,
                               kwargs={"autocommit": True, "prepare_threshold": prepare_threshold})
    await pool.open(wait=True)
    took, hits = [], []
    try:
        for q in words:
            started = time.perf_counter()
            found = await memory.search_transcripts(pool, TENANT, CAMPAIGN, q, limit=50)
            took.append((time.perf_counter() - started) * 1000)
            hits.append(len(found))
    finally:
        await pool.close()
    return took, hits


SEARCHES = ["dragon", "Greta", "amulet", "\"lost crown\"", "Pell", "crypt", "mayor's son",
            "dragon -festival", "\"iron key\" Bram", "sunken vault", "granary or mill",
            "hooded stranger", "spyglass", "Vex", "watchtower ridge", "healing potions",
            "nobody", "wedding duke", "xylophone", "ember eye"]


def line(label: str, values: list[float]) -> str:
    return (f"{label}: p50 {pct(values, 50):.2f} ms  p95 {pct(values, 95):.2f} ms  "
            f"max {max(values):.2f} ms  ({len(values)} queries)")


async def through_nats(home: Path, dsn: str, session: str, queries: list[tuple[str, str]]) -> None:
    from glyphoxa_bus.connection import BusSettings, connect, principal
    from glyphoxa_cli.stack import Stack, nats_passwords
    from glyphoxa_events.api import RecallReply, RecallRequest
    from glyphoxa_events.subjects import api_subject

    stack = Stack(home, env={"LOG_LEVEL": "warning", "MEMORY_EMBEDDER": "local"},
                  services=("session-control",), pg_dsn=dsn)
    await asyncio.to_thread(stack.start, lambda s: None)
    try:
        assert stack.nats is not None
        settings = BusSettings(url=stack.nats.url, user="npc-brain",
                               password=nats_passwords(home)["npc-brain"])
        nc = await connect(settings, name="bench-memory")
        subject = api_subject("memory.recall", principal(nc))
        try:
            async def ask(npc: str, text: str) -> tuple[float, float, int]:
                body = RecallRequest(tenant=TENANT, session=session, npc=npc, text=text, k=5)
                started = time.perf_counter()
                msg = await nc.request(subject, body.model_dump_json().encode(), timeout=5)
                took = (time.perf_counter() - started) * 1000
                reply = RecallReply.model_validate_json(msg.data)
                if not reply.ok:
                    raise RuntimeError(f"recall refused: {reply.error}")
                return took, float(reply.took_ms or 0.0), len(reply.memories)
            for npc, text in queries[:20]:  # warm-up
                await ask(npc, text)
            results = [await ask(npc, text) for npc, text in queries]
        finally:
            await nc.close()
    finally:
        await asyncio.to_thread(stack.stop)
    print(line("  round trip (bench -> NATS -> session-control: embed + query -> bench)",
               [r[0] for r in results]))
    print(line("  of which session-control's own took_ms (embed + query)", [r[1] for r in results]))
    print(f"  memories per reply: {min(r[2] for r in results)}-{max(r[2] for r in results)}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--exchange-s", type=float, default=25.0,
                        help="mean seconds of play between two addressed exchanges")
    parser.add_argument("--distinct", type=int, default=4000,
                        help="exchanges embedded for real; the others repeat one, vector perturbed")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--no-e2e", action="store_true", help="skip the recall through NATS")
    parser.add_argument("--keep", action="store_true", help="keep the database directory")
    args = parser.parse_args()
    if args.sessions < 1 or args.hours <= 0 or args.exchange_s <= 0 or args.distinct < 100 \
            or args.queries < 20:
        parser.error("need --sessions >= 1, --hours > 0, --exchange-s > 0, --distinct >= 100, "
                     "--queries >= 20")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}; "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    campaign = Campaign.model_validate(CAMPAIGN_BODY)
    started = time.perf_counter()
    data = Data(args, campaign)
    print(f"== generated: {args.sessions} sessions x {args.hours:g} h, an exchange every "
          f"{args.exchange_s:g} s on average: {len(data.exchanges):,} exchanges "
          f"({len(data.exchanges) / args.sessions:.0f} a session), {len(data.templates):,} distinct "
          f"[{time.perf_counter() - started:.1f} s]")
    lens = [len(t[4]) for t in data.templates]
    print(f"  memory text length: p50 {pct(lens, 50):.0f}, p95 {pct(lens, 95):.0f} characters; "
          f"player lines {min(len(t[2]) for t in data.templates)}-"
          f"{max(len(t[2]) for t in data.templates)} characters")

    bulk = LocalEmbedder(threads=os.cpu_count() or 1)
    vectors, embed_s = embed_templates(bulk, [t[4] for t in data.templates])
    await bulk.close()
    print(f"  embedded {len(vectors):,} exchanges with {bulk.name} ({os.cpu_count()} threads, "
          f"batches of 32) in {embed_s:.1f} s: {embed_s / len(vectors) * 1000:.2f} ms each")
    embedder = LocalEmbedder(threads=1)  # as session-control embeds a player's line
    query_vectors, query_ms = [], []
    for npc, text in data.queries:
        t0 = time.perf_counter()
        [v] = await embedder.embed([text])
        query_ms.append((time.perf_counter() - t0) * 1000)
        query_vectors.append((npc, v))
    print(line("  embedding one player line (the query's first step)", query_ms[20:]))

    base = Path(tempfile.mkdtemp(prefix="glyphoxa-memory-growth-"))
    base.chmod(0o755)  # as root, PostgreSQL runs as `nobody` and must reach its data
    server = PostgresServer(base / "pgdata").start()  # durable settings, as deployed
    try:
        create_database(server.dsn(), "glyphoxa_growth")
        dsn = server.dsn("glyphoxa_growth")
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await migrate(conn, load_migrations(files("glyphoxa_session_control") / "migrations"))
            await conn.execute("INSERT INTO tenants (id, name, max_concurrent_sessions,"
                               " monthly_session_hours) VALUES (%s, 'growth', 5, 1000)", (TENANT,))
        pool = AsyncConnectionPool(dsn, min_size=1, max_size=1, open=False, kwargs={"autocommit": True})
        await pool.open(wait=True)
        await Campaigns(pool).create(TENANT, campaign, "bench")
        await pool.close()
        took = await asyncio.to_thread(load, dsn, data, vectors, embedder.name, args.seed)
        print("== loaded into PostgreSQL 18 + pgvector (shared_buffers at its default, 128 MB): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in took.items()))
        print("== size")
        sizes(dsn)
        with psycopg.connect(dsn) as conn:
            per_npc = conn.execute(
                "SELECT w, count(*) FROM memories, unnest(witnesses) w GROUP BY w ORDER BY 2 DESC").fetchall()
        print("  memories each NPC may recall (witnessed): "
              + ", ".join(f"{w} {n:,}" for w, n in per_npc))

        print(f"== recall (memory.recall, k=5, {len(query_vectors)} real player lines, each asked "
              "of one NPC)")
        server.stop()
        server.start()
        cold, _ = await recall_pass(dsn, embedder.name, query_vectors, {})
        print(line("  cold-ish (first pass after a PostgreSQL restart), ef_search 40", cold))
        exact_took, exact = await recall_pass(dsn, embedder.name, query_vectors,
                                              {"enable_indexscan": "off"})
        for ef in (40, 100, 200):
            settings = {"hnsw.ef_search": str(ef)}
            await recall_pass(dsn, embedder.name, query_vectors[:50], settings)
            warm, found = await recall_pass(dsn, embedder.name, query_vectors, settings)
            agree = np.mean([len(set(f) & set(e)) / max(1, len(e)) for f, e in zip(found, exact)])
            print(line(f"  warm, hnsw.ef_search {ef}", warm)
                  + f"; top 5 as exact: {agree * 100:.1f}%")
        exact_took, _ = await recall_pass(dsn, embedder.name, query_vectors, {"enable_indexscan": "off"})
        print(line("  warm, exact (no HNSW: witnesses GIN + sort)", exact_took))
        never, _ = await recall_pass(dsn, embedder.name, query_vectors, {}, prepare_threshold=None)
        print(line("  warm, ef_search 40, the pool never preparing (prepare_threshold=None)", never))
        with psycopg.connect(dsn) as conn:
            npc, v = query_vectors[0]
            conn.execute("SET hnsw.iterative_scan = relaxed_order")
            plan = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS) SELECT id FROM memories WHERE tenant_id = %s AND"
                " campaign_id = %s AND witnesses @> ARRAY[%s]::text[] AND embed_model = %s AND"
                " embedding IS NOT NULL ORDER BY embedding <=> %s::vector LIMIT 40",
                (TENANT, CAMPAIGN, npc, embedder.name, memory.vector_literal(v))).fetchall()
        print("  the query's plan (warm, ef_search 40):")
        for (row,) in plan:
            print("    " + re.sub(r"'\[[^]]*\]'::vector", "$query", row))

        print("== transcript search (memory.search_transcripts, 50 hits, newest first)")
        words = SEARCHES * 10
        await search_pass(dsn, SEARCHES)
        took_search, hits = await search_pass(dsn, words)
        print(line("  warm", took_search) + f"; hits per query {min(hits)}-{max(hits)}")
        took_search, hits = await search_pass(dsn, words, prepare_threshold=None)
        print(line("  warm, the pool never preparing (prepare_threshold=None)", took_search))

        if not args.no_e2e:
            print("== recall through NATS (a session-control process with the local embedder, "
                  "the bench asking as npc-brain)")
            await through_nats(base / "stack", dsn, data.sessions[-1][0], data.queries)
    finally:
        await embedder.close()
        server.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"database kept in {base}")


if __name__ == "__main__":
    asyncio.run(main())
