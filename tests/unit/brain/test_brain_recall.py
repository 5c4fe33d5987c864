"""Recall in a turn (glyphoxa_npc_brain.recall with BrainHandler): the addressed NPC's
memories go into its prompt and their ids into the turn event; a late recall costs the turn
nothing but the deadline."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from glyphoxa_events.api import RecalledMemory
from glyphoxa_npc_brain.llm.fake import FakeLLM
from glyphoxa_npc_brain.metrics import BrainMetrics
from glyphoxa_npc_brain.recall import EarlyRecall, Recaller
from tests.unit.brain.brain_fakes import make_handler, metric, started, transcript_msg

pytestmark = pytest.mark.unit

DRAGON = RecalledMemory(id="41", kind="exchange", session="s0", turn_id="sam-1",
                        text='sam said to Greta: "We swore to hunt the red dragon of Mount Ash."')


class Remembering(Recaller):
    """A recaller whose session-control answers with ``memories`` after ``delay_s``."""

    def __init__(self, metrics: BrainMetrics, memories: tuple[RecalledMemory, ...],
                 delay_s: float = 0.0, timeout_s: float = 1.0):
        super().__init__(None, metrics, timeout_s=timeout_s, k=5)
        self.enabled, self.asked = True, []
        self._memories, self._delay = memories, delay_s

    async def recall(self, tenant: str, session: str, npc: str, text: str):  # type: ignore[no-untyped-def]
        self.asked.append((tenant, session, npc, text))
        try:
            async with asyncio.timeout(self._timeout_s):
                await asyncio.sleep(self._delay)
        except TimeoutError:
            return self._without("late", "test")
        self._metrics.recall.labels(result="ok").inc()
        return self._memories


async def test_the_addressed_npcs_memories_go_into_its_prompt_and_the_turn_names_them():
    llm = FakeLLM()
    metrics = BrainMetrics(registry=CollectorRegistry())
    handler, sink, _ = make_handler(llm, metrics=metrics)
    recaller = Remembering(metrics, (DRAGON,))
    handler._recall = EarlyRecall(recaller, "acme", "s1")
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, what did we swear to hunt?", utt="alex-7"))
    assert recaller.asked == [("acme", "s1", "greta", "Greta, what did we swear to hunt?")]
    _, messages, _, _ = llm.calls[-1]
    assert "red dragon of Mount Ash" in messages[-1].content
    assert sink.turn("alex-7").memories == ("41",)
    assert metric(metrics, "glyphoxa_npc_brain_recall_total", result="ok") == 1


async def test_table_talk_asks_for_no_memories():
    metrics = BrainMetrics(registry=CollectorRegistry())
    handler, sink, _ = make_handler(metrics=metrics)
    recaller = Remembering(metrics, (DRAGON,))
    handler._recall = EarlyRecall(recaller, "acme", "s1")
    await handler.on_control(started())
    await handler.on_message(transcript_msg("pass me the dice", utt="alex-8"))
    assert recaller.asked == [] and sink.turn("alex-8").memories == ()


async def test_a_late_recall_lets_the_turn_answer_without_memories():
    llm = FakeLLM()
    metrics = BrainMetrics(registry=CollectorRegistry())
    handler, sink, _ = make_handler(llm, metrics=metrics)
    handler._recall = EarlyRecall(Remembering(metrics, (DRAGON,), delay_s=5, timeout_s=0.05),
                                  "acme", "s1")
    await handler.on_control(started())
    await asyncio.wait_for(handler.on_message(
        transcript_msg("Greta, what did we swear to hunt?", utt="alex-9")), 2)
    turn = sink.turn("alex-9")
    assert turn.outcome.value == "answered" and turn.memories == ()
    assert "Mount Ash" not in llm.calls[-1][1][-1].content
    assert metric(metrics, "glyphoxa_npc_brain_recall_total", result="late") == 1


async def test_with_recall_off_a_turn_does_not_wait_a_turn_of_the_loop_for_it():
    """No task for a recall with nothing to ask: each turn of the loop on a turn's way lets
    every other session's ready work take a step first."""
    metrics = BrainMetrics(registry=CollectorRegistry())
    early = EarlyRecall(Recaller(None, metrics, timeout_s=1.0, k=5, enabled=False), "acme", "s1")
    asking = early.get("greta", "Greta, what did we swear to hunt?")
    with pytest.raises(StopIteration) as done:  # finished at its first step, never suspended
        asking.send(None)
    assert done.value.value == ()
    assert metric(metrics, "glyphoxa_npc_brain_recall_total", result="off") == 1
