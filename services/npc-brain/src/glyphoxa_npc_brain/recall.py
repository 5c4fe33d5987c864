"""Recall: what an addressed NPC remembers of earlier sessions that bears on the line it is
about to answer, asked of session-control (``glxapi.memory.recall``, docs/adr/0007).

A turn never waits for it longer than ``BRAIN_RECALL_TIMEOUT_MS``: a late, failed or refused
recall gives no memories, and the turn goes on without them (counted by result in
``glyphoxa_npc_brain_recall_total``). A recall started on an interim transcript is kept for
the final when the text is the same, so the final does not ask twice.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from glyphoxa_bus.connection import principal
from glyphoxa_bus.counted import worth_logging
from glyphoxa_events.api import RecalledMemory, RecallReply, RecallRequest
from glyphoxa_events.models import MalformedEvent, parse_as
from glyphoxa_events.subjects import api_subject
from glyphoxa_npc_brain.metrics import BrainMetrics

log = logging.getLogger("glyphoxa.npc_brain.recall")

VERB = "memory.recall"
Memories = tuple[RecalledMemory, ...]


class Recaller:
    """Asks session-control for memories; shared by a replica's sessions."""

    def __init__(self, nc: Client | None, metrics: BrainMetrics, *, timeout_s: float, k: int,
                 enabled: bool = True):
        self._nc, self._metrics = nc, metrics
        self._timeout_s, self._k = timeout_s, k
        self.enabled = enabled and nc is not None
        self._failures = 0

    def skipped(self, text: str) -> bool:
        """Nothing to ask (recall off, or no words): counted as ``off``."""
        if self.enabled and text.strip():
            return False
        self._metrics.recall.labels(result="off").inc()
        return True

    async def recall(self, tenant: str, session: str, npc: str, text: str) -> Memories:
        if self.skipped(text):
            return ()
        assert self._nc is not None
        request = RecallRequest(tenant=tenant, session=session, npc=npc, text=text[:4000],
                                k=self._k)
        started = time.perf_counter()
        try:
            msg = await self._nc.request(api_subject(VERB, principal(self._nc)),
                                         request.model_dump_json().encode(),
                                         timeout=self._timeout_s)
            reply = parse_as(RecallReply, msg.data)
        except (TimeoutError, NatsTimeout):
            return self._without("late", f"no answer within {self._timeout_s * 1000:.0f} ms")
        except NoRespondersError:
            return self._without("error", "session-control is not serving recall")
        except MalformedEvent as exc:
            return self._without("error", f"bad reply: {exc}")
        except Exception as exc:  # noqa: BLE001 - the bus is away: the turn goes on without
            return self._without("error", f"{type(exc).__name__}: {exc}")
        self._metrics.recall_seconds.observe(time.perf_counter() - started)
        if not reply.ok:
            return self._without("error", reply.error)
        self._metrics.recall.labels(result="ok" if reply.memories else "empty").inc()
        return reply.memories

    def _without(self, result: str, why: str) -> Memories:
        self._metrics.recall.labels(result=result).inc()
        self._failures += 1
        if worth_logging(self._failures):
            log.warning("recall %s, the turn goes on without memories: %s", result, why,
                        extra={"failures": self._failures})
        return ()


class EarlyRecall:
    """One session's recalls, started as early as the text allows: on the interim a
    speculative reply starts from, and reused on the final when the text is the same."""

    def __init__(self, recaller: Recaller, tenant: str, session: str):
        self._recaller, self._tenant, self._session = recaller, tenant, session
        self._started: dict[tuple[str, str], asyncio.Task[Memories]] = {}

    def start(self, npc: str, text: str) -> asyncio.Task[Memories]:
        key = (npc, " ".join(text.lower().split()))
        task = self._started.get(key)
        if task is None:
            task = asyncio.create_task(
                self._recaller.recall(self._tenant, self._session, npc, text), name="recall")
            self._started = {key: task}  # only the newest line's recall is worth keeping
        return task

    async def get(self, npc: str, text: str) -> Memories:
        if self._recaller.skipped(text):  # no task: the turn does not wait a turn of the loop
            return ()
        return await self.start(npc, text)
