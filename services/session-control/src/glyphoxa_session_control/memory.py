"""Campaign memory (docs/adr/0007-campaign-memory.md): what each NPC may remember across
sessions, in session-control's PostgreSQL.

- ``memories``: one row per heard exchange (written by the recorder from ``ctl.turn`` and
  ``ctl.played``) and per fact a GM taught an NPC. ``witnesses`` says which NPCs may recall
  a row (:meth:`glyphoxa_campaign.Campaign.witnesses` of the session's campaign snapshot);
  every read here filters by it and by tenant.
- :class:`MemoryIndexer` embeds rows without an embedding (or of another embedder) in the
  background; :func:`recall` ranks an NPC's embedded memories by similarity and recency.
- ``npc_recaps``: one summary per (session, NPC), readable and editable by the GM.
- :func:`search_transcripts`: the GM's full-text search across a campaign's sessions.

Every function takes the pool (or, for the recorder, its open connection) and names the tenant
in every query's WHERE: one tenant never reads or changes another's rows, whatever id it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

import numpy
from psycopg import AsyncConnection, Connection, InterfaceError, OperationalError
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import ValidationError

from glyphoxa_campaign import Campaign
from glyphoxa_events.models import MAX_FACT_CHARS
from glyphoxa_session_control import audit
from glyphoxa_session_control.errors import Invalid, NotFound
from glyphoxa_session_control.metrics import MEMORIES_EMBEDDED, MEMORY_INDEXER_BACKLOG

log = logging.getLogger("glyphoxa.session_control.memory")

DIMS = 384
SIMILARITY_WEIGHT = 0.85
RECENCY_WEIGHT = 0.15
RECENCY_DAYS = 30.0
CANDIDATES = 40
"""Nearest rows fetched through the HNSW index before re-ranking them with recency."""
MAX_TEXT = 10_000
MAX_SEED_FACTS = 20
MAX_SEED_RECAP_CHARS = 1500

Kind = Literal["exchange", "fact"]


class Embedder(Protocol):
    """Text in, ``(n, dims)`` float32 out, every row L2-normalised (``glyphoxa_memory``)."""

    name: str
    dims: int

    async def embed(self, texts: Sequence[str]) -> numpy.ndarray: ...


@dataclass(frozen=True)
class Recalled:
    id: int
    kind: Kind
    text: str
    session: str | None
    turn_id: str | None
    spoken_at: datetime
    similarity: float
    score: float


def vector_literal(vector: Sequence[float] | numpy.ndarray) -> str:
    """pgvector's text form (``[0.1,0.2,...]``), passed with a ``::vector`` cast. 384 finite
    numbers or ValueError: a NaN would be stored and poison every distance."""
    values = numpy.asarray(vector, dtype=numpy.float32).reshape(-1)
    if values.shape[0] != DIMS:
        raise ValueError(f"an embedding has {DIMS} dimensions, not {values.shape[0]}")
    if not numpy.isfinite(values).all():
        raise ValueError("an embedding must hold finite numbers only")
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def _clean_text(text: str, field: str = "text", limit: int = MAX_TEXT) -> str:
    text = text.strip()
    if not text:
        raise Invalid(f"{field}: must not be empty")
    if "\x00" in text:
        raise Invalid(f"{field}: text must not contain NUL")
    if len(text) > limit:
        raise Invalid(f"{field}: at most {limit} characters")
    return text


# --- the recorder's side -------------------------------------------------------------------

class SessionCampaigns:
    """The campaign snapshot of recently recorded sessions (``sessions.campaign``; it never
    changes once a session started), so that a batch of events parses it once."""

    def __init__(self, size: int = 256):
        self._known: OrderedDict[tuple[str, str], tuple[str, Campaign] | None] = OrderedDict()
        self._size = size

    def cached(self, tenant: str, session: str) -> tuple[str, Campaign] | None:
        """The session's campaign if it is known already (None: ask ``of``)."""
        found = self._known.get((tenant, session))
        if found is not None:
            self._known.move_to_end((tenant, session))
        return found

    async def of(self, conn: AsyncConnection, tenant: str, session: str) -> tuple[str, Campaign] | None:
        key = (tenant, session)
        if key in self._known:
            self._known.move_to_end(key)
            return self._known[key]
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute("SELECT campaign_id, campaign, replay_of FROM sessions"
                          " WHERE tenant_id = %s AND id = %s", (tenant, session))
        row = await cur.fetchone()
        if row is None:
            return None  # not cached: the session may be created later
        if row["replay_of"] is not None:  # a debugging run: recorded, never remembered
            found = None
        else:
            found = self._parse(tenant, session, row)
        self._known[key] = found
        while len(self._known) > self._size:
            self._known.popitem(last=False)
        return found

    @staticmethod
    def _parse(tenant: str, session: str, row: dict) -> tuple[str, Campaign] | None:
        try:
            return row["campaign_id"], Campaign.model_validate(row["campaign"])
        except ValidationError as exc:  # a snapshot this code cannot read: record, never remember
            log.warning("session %s/%s: its campaign snapshot does not validate, its exchanges "
                        "are not remembered (%d problems)", tenant, session, exc.error_count())
            return None


def exchange_text(campaign: Campaign, npc: str, speaker: str | None, player_text: str,
                  npc_text: str) -> str:
    """What is embedded and shown: ``"sam to Greta: ...\\nGreta: ..."`` (either part may be
    missing: a line the GM had the NPC say has no player's line, a reply cut off before a word
    was heard has no NPC's line)."""
    known = campaign.npc(npc)
    name = known.name if known is not None else npc
    lines = []
    if player_text.strip():
        lines.append(f"{speaker or 'someone'} to {name}: {player_text.strip()}")
    if npc_text.strip():
        lines.append(f"{name}: {npc_text.strip()}")
    return "\n".join(lines)[:MAX_TEXT]


async def record_exchange(conn: AsyncConnection, tenant: str, session: str, turn_id: str,
                          npc: str, *, campaign_id: str, campaign: Campaign, at: datetime,
                          speaker: str | None = None, player_text: str = "",
                          npc_text: str = "", heard: bool = False, create: bool = True) -> int | None:
    """Remember (or complete) the exchange of one turn, inside the recorder's transaction.

    Events of a turn come in either order and may be redelivered; each call merges what its
    event knows into the one row of ``(tenant, session, turn_id)``: the player's line and
    speaker from ``ctl.turn``, the NPC's words as heard (``heard``) from ``ctl.played``, which
    always win over the reply as generated. ``create=False`` only completes a row that exists
    (a turn whose reply nobody heard yet). A row the GM edited keeps its text. Returns the
    row's id, or None when nothing was stored (nothing to remember, or the campaign is gone).
    """
    text = exchange_text(campaign, npc, speaker, player_text, npc_text)
    witnesses, present = list(campaign.witnesses(npc)), list(campaign.present_with(npc))
    values = {"tenant": tenant, "campaign": campaign_id, "session": session, "turn": turn_id,
              "speaker": speaker, "npc": npc, "present": present, "witnesses": witnesses,
              "player_text": player_text, "npc_text": npc_text, "heard": heard, "text": text,
              "at": at}
    cur = conn.cursor(row_factory=dict_row)
    merge = (" speaker = coalesce(memories.speaker, %(speaker)s::text),"
             " player_text = CASE WHEN memories.player_text = '' THEN %(player_text)s::text"
             " ELSE memories.player_text END,"
             " npc_text = CASE WHEN %(heard)s::boolean THEN %(npc_text)s::text WHEN memories.played"
             " THEN memories.npc_text WHEN %(npc_text)s::text = '' THEN memories.npc_text"
             " ELSE %(npc_text)s::text END,"
             " played = memories.played OR %(heard)s::boolean,"
             " spoken_at = least(memories.spoken_at, %(at)s::timestamptz)")
    if create and text:
        await cur.execute(
            "INSERT INTO memories (tenant_id, campaign_id, session_id, turn_id, kind, speaker, npc,"
            " present, witnesses, player_text, npc_text, played, text, spoken_at)"
            " SELECT %(tenant)s::text, %(campaign)s::text, %(session)s::text, %(turn)s::text, 'exchange',"
            " %(speaker)s::text, %(npc)s::text, %(present)s::text[], %(witnesses)s::text[], %(player_text)s::text,"
            " %(npc_text)s::text, %(heard)s::boolean, %(text)s::text, %(at)s::timestamptz FROM campaigns WHERE tenant_id = %(tenant)s::text AND id = %(campaign)s::text"
            " ON CONFLICT (tenant_id, session_id, turn_id) DO UPDATE SET" + merge +
            " RETURNING id, speaker, player_text, npc_text, text, edited_at", values)
    else:
        await cur.execute(
            "UPDATE memories SET" + merge + " WHERE tenant_id = %(tenant)s::text"
            " AND session_id = %(session)s::text AND turn_id = %(turn)s::text"
            " RETURNING id, speaker, player_text, npc_text, text, edited_at", values)
    row = await cur.fetchone()
    if row is None:
        return None
    merged = exchange_text(campaign, npc, row["speaker"], row["player_text"], row["npc_text"])
    if row["edited_at"] is None and merged and merged != row["text"]:
        await conn.execute(
            "UPDATE memories SET text = %s, embedding = NULL, embed_model = NULL"
            " WHERE tenant_id = %s AND id = %s", (merged, tenant, row["id"]))
    return int(row["id"])


# --- the indexer's side --------------------------------------------------------------------

@dataclass(frozen=True)
class Pending:
    id: int
    tenant: str
    text: str


async def pending_embeddings(pool: AsyncConnectionPool, limit: int, model: str) -> list[Pending]:
    """Rows to embed (of every tenant: the indexer is the system's own task): those without an
    embedding first, then those embedded by another embedder than ``model``."""
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute("SELECT id, tenant_id, text FROM memories WHERE embedding IS NULL"
                          " ORDER BY id LIMIT %s", (limit,))
        rows = await cur.fetchall()
        if len(rows) < limit:
            # two ranges of the embed_model index, not a scan of every row each idle second
            await cur.execute("SELECT id, tenant_id, text FROM memories"
                              " WHERE embed_model < %s OR embed_model > %s ORDER BY id LIMIT %s",
                              (model, model, limit - len(rows)))
            rows += await cur.fetchall()
    return [Pending(r["id"], r["tenant_id"], r["text"]) for r in rows]


async def store_embeddings(pool: AsyncConnectionPool, rows: Sequence[Pending],
                           vectors: numpy.ndarray, model: str) -> int:
    """Store each row's vector, only if its text is still the one embedded (a GM edit in
    between leaves it for the next round). Returns how many were stored."""
    if len(rows) != len(vectors):
        raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors")
    stored = 0
    async with pool.connection() as conn, conn.transaction():
        for row, vector in zip(rows, vectors, strict=True):
            cur = await conn.execute(
                "UPDATE memories SET embedding = %s::vector, embed_model = %s"
                " WHERE tenant_id = %s AND id = %s AND text = %s",
                (vector_literal(vector), model, row.tenant, row.id, row.text))
            stored += cur.rowcount
    return stored


class RecallFirst:
    """Recalls are on a turn's path, the indexer is not: while a recall is in flight the
    indexer waits before its next slice (at most ``max_wait_s``, so it is never starved for
    good), and it embeds in slices small enough that a recall waits for one at most."""

    def __init__(self, max_wait_s: float = 2.0):
        self._in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._max_wait_s = max_wait_s

    @contextlib.asynccontextmanager
    async def recalling(self) -> AsyncIterator[None]:
        self._in_flight += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._quiet.set()

    async def quiet(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._quiet.wait(), self._max_wait_s)


class MemoryIndexer:
    """Embeds memories in the background, ``batch`` rows at a time; sleeps ``idle_s`` when
    there is nothing to do and backs off (doubling up to ``max_backoff_s``) while PostgreSQL or
    the embedder fails. ``run()`` returns after ``close()``."""

    SLICE = 4  # lines embedded at a time: a recall waits for one slice at most (~50 ms)

    def __init__(self, pool: AsyncConnectionPool, embedder: Embedder, batch: int = 32,
                 idle_s: float = 1.0, max_backoff_s: float = 30.0,
                 first: RecallFirst | None = None):
        if embedder.dims != DIMS:
            raise ValueError(f"memories hold {DIMS}-dimensional embeddings, "
                             f"{embedder.name} makes {embedder.dims}")
        self._pool, self._embedder, self._batch = pool, embedder, batch
        self._idle_s, self._max_backoff_s = idle_s, max_backoff_s
        self._first = first or RecallFirst()
        self._closed = asyncio.Event()
        self.embedded = 0

    async def run(self) -> None:
        backoff = 0.0
        while not self._closed.is_set():
            try:
                done = await self.step()
            except (OperationalError, InterfaceError, PoolTimeout, OSError) as exc:
                MEMORIES_EMBEDDED.labels(result="db_error").inc()
                backoff = min(self._max_backoff_s, max(0.5, backoff * 2))
                log.warning("memory indexer: the database is away (%s), again in %.1f s",
                            type(exc).__name__, backoff)
                await self._sleep(backoff)
                continue
            except _EmbedFailed as exc:
                MEMORIES_EMBEDDED.labels(result="embed_error").inc()
                backoff = min(self._max_backoff_s, max(0.5, backoff * 2))
                log.warning("memory indexer: embedding failed (%s), again in %.1f s",
                            exc.reason, backoff)
                await self._sleep(backoff)
                continue
            backoff = 0.0
            if done < self._batch:
                await self._sleep(self._idle_s)

    async def step(self) -> int:
        """One batch: returns how many rows it took (0: nothing to do)."""
        rows = await pending_embeddings(self._pool, self._batch, self._embedder.name)
        MEMORY_INDEXER_BACKLOG.set(len(rows))
        if not rows:
            return 0
        texts = [r.text for r in rows]
        slices = []
        try:
            for start in range(0, len(texts), self.SLICE):
                await self._first.quiet()
                slices.append(await self._embedder.embed(texts[start:start + self.SLICE]))
        except Exception as exc:  # noqa: BLE001 - any embedder failure: back off, try again
            raise _EmbedFailed(type(exc).__name__) from exc
        vectors = numpy.concatenate(slices)
        stored = await store_embeddings(self._pool, rows, vectors, self._embedder.name)
        self.embedded += stored
        MEMORIES_EMBEDDED.labels(result="stored").inc(stored)
        return len(rows)

    async def close(self) -> None:
        self._closed.set()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._closed.wait(), seconds)
        except TimeoutError:
            pass


class _EmbedFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- recall --------------------------------------------------------------------------------

RECALL_SQL = (
    "SELECT id, kind, text, session_id, turn_id, spoken_at,"
    " 1 - (embedding <=> %(q)s::vector) AS similarity FROM memories"
    " WHERE tenant_id = %(tenant)s AND campaign_id = %(campaign)s"
    " AND witnesses @> ARRAY[%(npc)s]::text[] AND embed_model = %(model)s"
    " AND embedding IS NOT NULL ORDER BY embedding <=> %(q)s::vector LIMIT %(n)s")
"""Never run as a prepared statement: after psycopg's fifth run PostgreSQL may switch to a
generic plan, which cannot order by the HNSW index for an unknown vector and sorts every
witnessed row (44 ms instead of 2.4 ms for a 29,000-memory campaign, docs/benchmarks.md part 8).
It runs with ``hnsw.iterative_scan = relaxed_order``, so the witness filter cannot starve the
index scan."""


def _recall_params(tenant: str, campaign: str, npc: str,
                   query_vector: Sequence[float] | numpy.ndarray, model: str, k: int) -> dict:
    return {"q": vector_literal(query_vector), "tenant": tenant, "campaign": campaign,
            "npc": npc, "model": model, "n": max(CANDIDATES, k)}


def _ranked(rows: list[dict], k: int, now: datetime | None) -> list[Recalled]:
    """The best ``k`` by ``0.85 * cosine + 0.15 * exp(-age / 30 days)``."""
    now = now or datetime.now(UTC)
    found = []
    for r in rows:
        age_days = max(0.0, (now - r["spoken_at"]).total_seconds() / 86400)
        score = SIMILARITY_WEIGHT * r["similarity"] + RECENCY_WEIGHT * math.exp(-age_days / RECENCY_DAYS)
        found.append(Recalled(r["id"], r["kind"], r["text"], r["session_id"], r["turn_id"],
                              r["spoken_at"], float(r["similarity"]), float(score)))
    found.sort(key=lambda m: (-m.score, -m.id))
    return found[:k]


async def recall(pool: AsyncConnectionPool, tenant: str, campaign: str, npc: str,
                 query_vector: Sequence[float] | numpy.ndarray, model: str, k: int = 5,
                 now: datetime | None = None) -> list[Recalled]:
    """At most ``k`` memories ``npc`` witnessed, embedded by ``model``, best first by
    ``0.85 * cosine + 0.15 * exp(-age / 30 days)``: the ``CANDIDATES`` nearest through the
    HNSW index (iterative scan, so the witness filter cannot starve it), re-ranked."""
    if k <= 0:
        return []
    params = _recall_params(tenant, campaign, npc, query_vector, model, k)
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(RECALL_SQL, params, prepare=False)
        rows = await cur.fetchall()
    return _ranked(rows, k, now)


def recall_sync(conn: Connection, tenant: str, campaign: str, npc: str,
                query_vector: Sequence[float] | numpy.ndarray, model: str, k: int = 5,
                now: datetime | None = None) -> list[Recalled]:
    """``recall`` on a blocking connection of the caller's, in the calling (worker) thread:
    the turn path's recall does not wait for session-control's event loop between round
    trips (``RecallService``). The connection is set up by ``configure_recall_connection``."""
    if k <= 0:
        return []
    params = _recall_params(tenant, campaign, npc, query_vector, model, k)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(RECALL_SQL, params, prepare=False)
        rows = cur.fetchall()
    return _ranked(rows, k, now)


def configure_recall_connection(conn: Connection) -> None:
    """A connection of recall's own pool: autocommit, iterative HNSW scans for its session."""
    conn.autocommit = True
    conn.execute("SET hnsw.iterative_scan = relaxed_order")


# --- the GM's side: search, memories, facts, recaps ----------------------------------------

@dataclass(frozen=True)
class SearchHit:
    session: str
    turn_id: str
    role: str
    speaker: str
    text: str
    complete: bool
    spoken_ns: int
    at: datetime
    npc: str | None


async def campaign_exists(conn: AsyncConnection, tenant: str, campaign: str) -> None:
    cur = await conn.execute("SELECT 1 FROM campaigns WHERE tenant_id = %s AND id = %s",
                             (tenant, campaign))
    if await cur.fetchone() is None:
        raise NotFound(f"no campaign {campaign!r}")


async def npc_exists(conn: AsyncConnection, tenant: str, campaign: str, npc: str) -> None:
    await campaign_exists(conn, tenant, campaign)
    cur = await conn.execute("SELECT 1 FROM npcs WHERE tenant_id = %s AND campaign_id = %s AND id = %s",
                             (tenant, campaign, npc))
    if await cur.fetchone() is None:
        raise NotFound(f"no NPC {npc!r} in campaign {campaign!r}")


async def search_transcripts(pool: AsyncConnectionPool, tenant: str, campaign: str, q: str,
                             limit: int = 50, before: datetime | None = None) -> list[SearchHit]:
    """Transcript lines of the campaign's sessions matching ``q`` (web-search syntax: words,
    "a phrase", -not, or), newest first; ``before`` pages on (the ``at`` of the last hit)."""
    q = _clean_text(q, "q", 500)
    if before is not None and before.tzinfo is None:
        before = before.replace(tzinfo=UTC)  # a time without a zone is UTC, as every ``at`` is
    before_ns = None if before is None else int(before.timestamp() * 1e9)
    async with pool.connection() as conn:
        await campaign_exists(conn, tenant, campaign)
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT l.session_id, l.turn_id, l.role, l.speaker, l.text, l.complete, l.spoken_ns, t.npc"
            " FROM transcript_lines l JOIN sessions s ON s.tenant_id = l.tenant_id AND s.id = l.session_id"
            " LEFT JOIN turns t ON l.role = 'player' AND t.tenant_id = l.tenant_id"
            " AND t.session_id = l.session_id AND t.turn_id = l.turn_id"
            " WHERE l.tenant_id = %(tenant)s AND s.tenant_id = %(tenant)s AND s.campaign_id = %(campaign)s"
            " AND l.search @@ websearch_to_tsquery('simple', %(q)s)"
            " AND (%(before)s::bigint IS NULL OR l.spoken_ns < %(before)s::bigint)"
            " ORDER BY l.spoken_ns DESC, l.session_id, l.role LIMIT %(limit)s",
            {"tenant": tenant, "campaign": campaign, "q": q, "before": before_ns, "limit": limit})
        rows = await cur.fetchall()
    return [SearchHit(r["session_id"], r["turn_id"], r["role"], r["speaker"], r["text"],
                      r["complete"], r["spoken_ns"], datetime.fromtimestamp(r["spoken_ns"] / 1e9, UTC),
                      r["npc"]) for r in rows]


_MEMORY_COLUMNS = ("id, kind, session_id AS session, turn_id, speaker, npc, present, witnesses,"
                   " text, spoken_at, created_at, embed_model, embedding IS NOT NULL AS embedded,"
                   " taught_by, edited_by, edited_at")


async def list_memories(pool: AsyncConnectionPool, tenant: str, campaign: str, npc: str,
                        limit: int = 50, before_id: int | None = None,
                        kind: Kind | None = None) -> list[dict]:
    """What ``npc`` may recall (rows it witnessed), newest first; ``before_id`` pages on."""
    async with pool.connection() as conn:
        await npc_exists(conn, tenant, campaign, npc)
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE tenant_id = %(tenant)s"
            " AND campaign_id = %(campaign)s AND witnesses @> ARRAY[%(npc)s]::text[]"
            " AND (%(kind)s::text IS NULL OR kind = %(kind)s)"
            " AND (%(before)s::bigint IS NULL OR id < %(before)s) ORDER BY id DESC LIMIT %(limit)s",
            {"tenant": tenant, "campaign": campaign, "npc": npc, "kind": kind, "before": before_id,
             "limit": limit})
        return await cur.fetchall()


async def edit_memory(pool: AsyncConnectionPool, tenant: str, campaign: str, memory_id: int,
                      text: str, actor: str) -> tuple[dict, str]:
    """The GM corrects a memory: new text, embedded again by the indexer. The row, and the
    text it had (a fact stays within ``MAX_FACT_CHARS``, as when it was taught)."""
    text = _clean_text(text)
    async with pool.connection() as conn, conn.transaction():
        await campaign_exists(conn, tenant, campaign)
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute("SELECT kind, text FROM memories WHERE tenant_id = %s AND campaign_id = %s"
                          " AND id = %s FOR UPDATE", (tenant, campaign, memory_id))
        before = await cur.fetchone()
        if before is None:
            raise NotFound(f"no memory {memory_id} in campaign {campaign!r}")
        if before["kind"] == "fact":
            _clean_text(text, limit=MAX_FACT_CHARS)
        await cur.execute(
            "UPDATE memories SET text = %s, embedding = NULL, embed_model = NULL, edited_by = %s,"
            f" edited_at = now() WHERE tenant_id = %s AND campaign_id = %s AND id = %s"
            f" RETURNING {_MEMORY_COLUMNS}", (text, actor, tenant, campaign, memory_id))
        row = await cur.fetchone()  # the row is locked (FOR UPDATE above): it is there
        assert row is not None
        await audit.record(conn, actor, tenant, "memory.edit", f"{campaign}/{memory_id}",
                           npc=row["npc"], kind=row["kind"])
        return row, before["text"]


async def delete_memory(pool: AsyncConnectionPool, tenant: str, campaign: str, memory_id: int,
                        actor: str, kind: Kind | None = None, npc: str | None = None) -> dict:
    """Forget a memory (or, with ``kind='fact'`` and ``npc``, a fact taught to that NPC); what
    it was: ``npc``, ``kind``, ``text``."""
    what = "fact" if kind == "fact" else "memory"
    async with pool.connection() as conn, conn.transaction():
        if npc is not None:
            await npc_exists(conn, tenant, campaign, npc)
        else:
            await campaign_exists(conn, tenant, campaign)
        cur = await conn.execute(
            "DELETE FROM memories WHERE tenant_id = %s AND campaign_id = %s AND id = %s"
            " AND (%s::text IS NULL OR kind = %s) AND (%s::text IS NULL OR npc = %s)"
            " RETURNING npc, kind, text",
            (tenant, campaign, memory_id, kind, kind, npc, npc))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no {what} {memory_id} in campaign {campaign!r}"
                           + (f" for NPC {npc!r}" if npc else ""))
        await audit.record(conn, actor, tenant, f"{what}.delete", f"{campaign}/{memory_id}",
                           npc=row["npc"], kind=row["kind"])
        return dict(row)


async def teach_fact(pool: AsyncConnectionPool, tenant: str, campaign: str, npc: str, text: str,
                     actor: str, session: str | None = None, max_chars: int = MAX_FACT_CHARS) -> dict:
    """A fact the GM gives one NPC; only that NPC witnesses (and recalls) it."""
    text = _clean_text(text, limit=max_chars)
    async with pool.connection() as conn, conn.transaction():
        await npc_exists(conn, tenant, campaign, npc)
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "INSERT INTO memories (tenant_id, campaign_id, kind, npc, present, witnesses, text,"
            " taught_by) VALUES (%s, %s, 'fact', %s, ARRAY[%s]::text[], ARRAY[%s]::text[], %s, %s)"
            f" RETURNING {_MEMORY_COLUMNS}", (tenant, campaign, npc, npc, npc, text, actor))
        row = await cur.fetchone()
        assert row is not None
        await audit.record(conn, actor, tenant, "fact.teach", f"{campaign}/{row['id']}", npc=npc,
                           session=session)
        return row


async def list_facts(pool: AsyncConnectionPool, tenant: str, campaign: str, npc: str) -> list[dict]:
    async with pool.connection() as conn:
        await npc_exists(conn, tenant, campaign, npc)
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE tenant_id = %s AND campaign_id = %s"
            " AND kind = 'fact' AND npc = %s ORDER BY id", (tenant, campaign, npc))
        return await cur.fetchall()


_RECAP_COLUMNS = ("id, session_id AS session, npc, status, text, error, attempts, model,"
                  " created_at, updated_at, edited_by, edited_at")


async def list_recaps(pool: AsyncConnectionPool, tenant: str, campaign: str, npc: str) -> list[dict]:
    async with pool.connection() as conn:
        await npc_exists(conn, tenant, campaign, npc)
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"SELECT {_RECAP_COLUMNS} FROM npc_recaps WHERE tenant_id = %s AND campaign_id = %s"
            " AND npc = %s ORDER BY created_at DESC, id DESC", (tenant, campaign, npc))
        return await cur.fetchall()


async def edit_recap(pool: AsyncConnectionPool, tenant: str, campaign: str, recap_id: int,
                     text: str, actor: str, max_chars: int = MAX_SEED_RECAP_CHARS) -> dict:
    """The GM's own recap: stored as done (a pending one is then no longer made)."""
    text = _clean_text(text, limit=max_chars)
    async with pool.connection() as conn, conn.transaction():
        await campaign_exists(conn, tenant, campaign)
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "UPDATE npc_recaps SET text = %s, status = 'done', error = NULL, edited_by = %s,"
            " edited_at = now(), updated_at = now() WHERE tenant_id = %s AND campaign_id = %s"
            f" AND id = %s RETURNING {_RECAP_COLUMNS}", (text, actor, tenant, campaign, recap_id))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no recap {recap_id} in campaign {campaign!r}")
        await audit.record(conn, actor, tenant, "recap.edit", f"{campaign}/{recap_id}",
                           npc=row["npc"], session=row["session"])
        return row


async def delete_recap(pool: AsyncConnectionPool, tenant: str, campaign: str, recap_id: int,
                       actor: str) -> None:
    async with pool.connection() as conn, conn.transaction():
        await campaign_exists(conn, tenant, campaign)
        cur = await conn.execute(
            "DELETE FROM npc_recaps WHERE tenant_id = %s AND campaign_id = %s AND id = %s"
            " RETURNING npc, session_id", (tenant, campaign, recap_id))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no recap {recap_id} in campaign {campaign!r}")
        await audit.record(conn, actor, tenant, "recap.delete", f"{campaign}/{recap_id}",
                           npc=row["npc"], session=row["session_id"])


async def session_seed(pool: AsyncConnectionPool, tenant: str, campaign: str,
                       max_facts: int = MAX_SEED_FACTS,
                       max_recap_chars: int = MAX_SEED_RECAP_CHARS
                       ) -> tuple[dict[str, str], dict[str, list[str]]]:
    """What each NPC starts a session with: its latest done recap (cut to
    ``max_recap_chars``) and the newest ``max_facts`` facts taught to it, oldest first."""
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT DISTINCT ON (npc) npc, text FROM npc_recaps WHERE tenant_id = %s"
            " AND campaign_id = %s AND status = 'done' AND text <> ''"
            " ORDER BY npc, created_at DESC, id DESC", (tenant, campaign))
        recaps = {r["npc"]: r["text"][:max_recap_chars] for r in await cur.fetchall()}
        await cur.execute(
            "SELECT npc, text FROM (SELECT npc, text, id, row_number() OVER (PARTITION BY npc"
            " ORDER BY id DESC) AS n FROM memories WHERE tenant_id = %s AND campaign_id = %s"
            " AND kind = 'fact') f WHERE n <= %s ORDER BY npc, id", (tenant, campaign, max_facts))
        facts: dict[str, list[str]] = {}
        for r in await cur.fetchall():
            facts.setdefault(r["npc"], []).append(r["text"])
    return recaps, facts
