"""Recall for npc-brain (``glxapi.memory.recall``, docs/adr/0007): the line embedded, the
memories the NPC witnessed found in ``memories`` and returned best first. On every addressed
turn's path, so it does one embedding and one indexed query, with the session's campaign
cached; npc-brain gives up after its own deadline and goes on without."""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from glyphoxa_events.api import MAX_MEMORY_CHARS, RecalledMemory, RecallReply, RecallRequest
from glyphoxa_pg.pool import pool_conninfo
from glyphoxa_pg.settings import PgSettings
from glyphoxa_session_control import memory
from glyphoxa_session_control.errors import NotFound
from glyphoxa_session_control.memory import Embedder, RecallFirst, SessionCampaigns
from glyphoxa_session_control.metrics import RECALL_SECONDS


class RecallService:
    CACHED_LINES = 256  # a line asked for again (its interim, another NPC) is embedded once

    def __init__(self, pool: AsyncConnectionPool, embedder: Embedder | None,
                 first: RecallFirst | None = None, *, own: ConnectionPool | None = None):
        """``own``: recall's own blocking connections (``open_recall_pool``); each query
        then runs whole in a worker thread, not a round trip at a time on the event loop
        that also records every session's events. Without it, ``pool``. The threads are
        recall's own too, one per connection: while PostgreSQL is away a query waits for a
        connection (``RECALL_CONNECT_S`` at most) without holding up the threads that embed."""
        self._pool, self._embedder, self._own = pool, embedder, own
        self._threads = ThreadPoolExecutor(own.max_size, thread_name_prefix="recall-query") \
            if own is not None else None
        self._campaigns = SessionCampaigns()
        self.first = first or RecallFirst()
        self._vectors: OrderedDict[str, numpy.ndarray] = OrderedDict()

    async def _vector(self, text: str) -> numpy.ndarray:
        assert self._embedder is not None
        key = " ".join(text.split())
        vector = self._vectors.get(key)
        if vector is None:
            [vector] = await self._embedder.embed([text])
            self._vectors[key] = vector
            while len(self._vectors) > self.CACHED_LINES:
                self._vectors.popitem(last=False)
        else:
            self._vectors.move_to_end(key)
        return vector

    async def recall(self, req: RecallRequest) -> RecallReply:
        started = time.perf_counter()
        if self._embedder is None:  # MEMORY_EMBEDDER=off: nothing is embedded to compare with
            return RecallReply(ok=True, embed_model="off")
        found = self._campaigns.cached(req.tenant, req.session)
        if found is None:  # a pool connection only when the campaign is not known yet
            async with self._pool.connection() as conn:
                found = await self._campaigns.of(conn, req.tenant, req.session)
        looked_up = time.perf_counter()
        RECALL_SECONDS.labels(phase="campaign").observe(looked_up - started)
        if found is None:
            raise NotFound(f"tenant {req.tenant!r} has no session {req.session!r}")
        campaign_id, campaign = found
        npc = campaign.npc(req.npc)
        if npc is None:
            raise NotFound(f"the session's campaign has no NPC {req.npc!r}")
        async with self.first.recalling():  # the background indexer waits meanwhile
            vector = await self._vector(without_names(req.text, npc.names))
            embedded = time.perf_counter()
            if self._own is not None:
                rows = await asyncio.get_running_loop().run_in_executor(
                    self._threads, self._query, req.tenant, campaign_id, req.npc, vector, req.k)
            else:
                rows = await memory.recall(self._pool, req.tenant, campaign_id, req.npc,
                                           vector, self._embedder.name, req.k)
        done = time.perf_counter()
        RECALL_SECONDS.labels(phase="embed").observe(embedded - looked_up)
        RECALL_SECONDS.labels(phase="query").observe(done - embedded)
        RECALL_SECONDS.labels(phase="total").observe(done - started)
        memories = tuple(
            RecalledMemory(id=str(r.id), kind=r.kind, text=r.text[:MAX_MEMORY_CHARS],
                           session=r.session, turn_id=r.turn_id,
                           spoken_ns=_ns(r.spoken_at), score=max(-1.0, min(1.0, r.score)))
            for r in rows)
        return RecallReply(ok=True, memories=memories, embed_model=self._embedder.name,
                           took_ms=round((done - started) * 1000, 2))


    def _query(self, tenant: str, campaign: str, npc: str, vector: numpy.ndarray,
               k: int) -> list[memory.Recalled]:
        assert self._own is not None and self._embedder is not None
        with self._own.connection() as conn:
            return memory.recall_sync(conn, tenant, campaign, npc, vector, self._embedder.name, k)

    async def close(self) -> None:
        if self._own is not None:
            await asyncio.to_thread(self._own.close, 2.0)
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)


RECALL_CONNECT_S = 1.0
"""The longest a recall waits for one of its connections: npc-brain gives up on it far sooner
(``BRAIN_RECALL_TIMEOUT_MS``), so waiting longer would only hold a thread."""


async def open_recall_pool(settings: PgSettings, size: int = 2) -> ConnectionPool:
    """Recall's own ``size`` blocking connections, opened and set up
    (``memory.configure_recall_connection``)."""
    pool = ConnectionPool(pool_conninfo(settings, "session-control-recall"), min_size=size,
                          max_size=size, open=False, name="session-control-recall",
                          configure=memory.configure_recall_connection,
                          timeout=min(settings.pool_timeout_s, RECALL_CONNECT_S))
    await asyncio.to_thread(pool.open, True, settings.connect_timeout_s)
    return pool


def without_names(text: str, names: tuple[str, ...]) -> str:
    """The line without the addressed NPC's own names ("Aldric, what is the boat called?" ->
    "what is the boat called?"). Every line said to an NPC has its name in it, so the name says
    nothing about which memory fits, but it pulls all of them up alike, over one the NPC only
    overheard (measured with MiniLM: 0.44 against 0.42 for unrelated chatter with the name,
    0.51 against 0.26 without it)."""
    pattern = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    stripped = re.sub(rf"(?i)\b(?:{pattern})\b[,.!?:;]*\s*", "", text).strip()
    return stripped or text


def _ns(at: datetime) -> int:
    return max(0, int(at.astimezone(UTC).timestamp() * 1e9))
