"""npc-brain's recall client on a real nats-server (glyphoxa_npc_brain.recall.Recaller): the
request it sends, and every way the answer can fail to come, each ending in no memories."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry

from glyphoxa_events.api import RecalledMemory, RecallReply
from glyphoxa_npc_brain.metrics import BrainMetrics
from glyphoxa_npc_brain.recall import Recaller
from tests.unit.brain.brain_fakes import metric

pytestmark = pytest.mark.integration

MEMORY = RecalledMemory(id="7", kind="fact", text="The bridge is out.")


async def serve(nc, answer):  # type: ignore[no-untyped-def]
    asked = []

    async def handle(msg):  # type: ignore[no-untyped-def]
        asked.append((msg.subject, json.loads(msg.data)))
        body = await answer()
        if body is not None:
            await msg.respond(body)
    await nc.subscribe("glxapi.memory.recall.*", cb=handle)
    return asked


def recaller(nc, timeout_s: float = 0.2) -> Recaller:  # type: ignore[no-untyped-def]
    return Recaller(nc, BrainMetrics(registry=CollectorRegistry()), timeout_s=timeout_s, k=3)


async def test_memories_come_back_for_the_npc_and_line_asked(nc):
    async def answer() -> bytes:
        return RecallReply(ok=True, memories=(MEMORY,), embed_model="m").model_dump_json().encode()
    asked = await serve(nc, answer)
    r = recaller(nc)
    assert await r.recall("acme", "s1", "greta", "Greta, can we cross?") == (MEMORY,)
    [(subject, body)] = asked
    assert subject == "glxapi.memory.recall.anonymous"  # under its own name (ADR 0006)
    assert body == {"tenant": "acme", "session": "s1", "npc": "greta",
                    "text": "Greta, can we cross?", "k": 3}
    assert metric(r._metrics, "glyphoxa_npc_brain_recall_total", result="ok") == 1


@pytest.mark.parametrize("answer_body, result", [
    (None, "late"),  # session-control never answers
    (b'{"ok": true, "memories": "nope"}', "error"),  # a reply it cannot read
    (RecallReply(ok=False, error="tenant 'acme' has no session 's1'").model_dump_json().encode(),
     "error"),
])
async def test_no_answer_a_bad_one_or_a_refusal_give_no_memories(nc, answer_body, result):
    async def answer() -> bytes | None:
        return answer_body
    await serve(nc, answer)
    r = recaller(nc, timeout_s=0.1)
    assert await asyncio.wait_for(r.recall("acme", "s1", "greta", "hello"), 2) == ()
    assert metric(r._metrics, "glyphoxa_npc_brain_recall_total", result=result) == 1


async def test_without_session_control_the_turn_is_not_held_up(nc):
    r = recaller(nc, timeout_s=1.0)
    assert await asyncio.wait_for(r.recall("acme", "s1", "greta", "hello"), 0.5) == ()
    assert metric(r._metrics, "glyphoxa_npc_brain_recall_total", result="error") == 1  # no responders
