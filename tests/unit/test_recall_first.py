"""Recall comes before the background indexer in session-control (memory.RecallFirst), and a
line is embedded once however often it is asked for (recall.RecallService)."""

from __future__ import annotations

import asyncio

import numpy
import pytest

from glyphoxa_session_control.memory import RecallFirst
from glyphoxa_session_control.recall import RecallService

pytestmark = pytest.mark.unit


async def test_the_indexer_waits_while_a_recall_is_in_flight_but_never_for_good():
    first = RecallFirst(max_wait_s=0.5)
    await asyncio.wait_for(first.quiet(), 0.1)  # nothing in flight: no wait
    async with first.recalling():
        waiting = asyncio.create_task(first.quiet())
        await asyncio.sleep(0.05)
        assert not waiting.done()
    await asyncio.wait_for(waiting, 0.1)  # the recall is over
    async with first.recalling():
        started = asyncio.get_running_loop().time()
        await first.quiet()  # a recall that never ends lets the indexer on after max_wait_s
        assert asyncio.get_running_loop().time() - started == pytest.approx(0.5, abs=0.1)


class Counting:
    name, dims = "counting", 384

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def embed(self, texts):  # type: ignore[no-untyped-def]
        self.texts += list(texts)
        return numpy.ones((len(texts), 384), dtype=numpy.float32) / numpy.sqrt(384)


async def test_a_line_asked_for_again_is_not_embedded_again():
    embedder = Counting()
    service = RecallService(None, embedder)  # type: ignore[arg-type]
    a = await service._vector("Greta, what did we swear?")
    b = await service._vector("Greta,  what did we swear? ")
    assert embedder.texts == ["Greta, what did we swear?"] and a is b
    for n in range(RecallService.CACHED_LINES + 1):
        await service._vector(f"line {n}")
    await service._vector("Greta, what did we swear?")  # the oldest went first
    assert embedder.texts.count("Greta, what did we swear?") == 2


def test_the_addressed_npcs_own_names_are_left_out_of_the_line_it_is_compared_by():
    from glyphoxa_session_control.recall import without_names

    assert without_names("Aldric, what is the boat called?", ("Aldric",)) == (
        "what is the boat called?")
    assert without_names("What is it called, old barkeep?", ("Aldric", "Old Barkeep")) == (
        "What is it called,")
    assert without_names("Captain Rowan! Is the gate open?", ("Captain Rowan", "Captain")) == (
        "Is the gate open?")
    assert without_names("Greta, did Aldric pay?", ("Greta",)) == "did Aldric pay?"  # others stay
    assert without_names("Aldric!", ("Aldric",)) == "Aldric!"  # nothing else: the line as it is
    assert without_names("Aldricson is here", ("Aldric",)) == "Aldricson is here"
