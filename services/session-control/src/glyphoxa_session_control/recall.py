"""Recall for npc-brain (``glxapi.memory.recall``, docs/adr/0007): the line embedded, the
memories the NPC witnessed found in ``memories`` and returned best first. On every addressed
turn's path, so it does one embedding and one indexed query, with the session's campaign
cached; npc-brain gives up after its own deadline and goes on without."""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from datetime import UTC, datetime

import numpy
from psycopg_pool import AsyncConnectionPool

from glyphoxa_events.api import MAX_MEMORY_CHARS, RecalledMemory, RecallReply, RecallRequest
from glyphoxa_session_control import memory
from glyphoxa_session_control.errors import NotFound
from glyphoxa_session_control.memory import Embedder, RecallFirst, SessionCampaigns


class RecallService:
    CACHED_LINES = 256  # a line asked for again (its interim, another NPC) is embedded once

    def __init__(self, pool: AsyncConnectionPool, embedder: Embedder | None,
                 first: RecallFirst | None = None):
        self._pool, self._embedder = pool, embedder
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
        async with self._pool.connection() as conn:
            found = await self._campaigns.of(conn, req.tenant, req.session)
        if found is None:
            raise NotFound(f"tenant {req.tenant!r} has no session {req.session!r}")
        campaign_id, campaign = found
        npc = campaign.npc(req.npc)
        if npc is None:
            raise NotFound(f"the session's campaign has no NPC {req.npc!r}")
        async with self.first.recalling():  # the background indexer waits meanwhile
            vector = await self._vector(without_names(req.text, npc.names))
            rows = await memory.recall(self._pool, req.tenant, campaign_id, req.npc, vector,
                                       self._embedder.name, req.k)
        memories = tuple(
            RecalledMemory(id=str(r.id), kind=r.kind, text=r.text[:MAX_MEMORY_CHARS],
                           session=r.session, turn_id=r.turn_id,
                           spoken_ns=_ns(r.spoken_at), score=max(-1.0, min(1.0, r.score)))
            for r in rows)
        return RecallReply(ok=True, memories=memories, embed_model=self._embedder.name,
                           took_ms=round((time.perf_counter() - started) * 1000, 2))


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
