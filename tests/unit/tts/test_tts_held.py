"""Sentences synthesized ahead (``BRAIN_SPECULATE``): a held chunk is synthesized but nothing
is published until a turn's chunk claims it; then its frames go out at once, as the turn's.
A discarded, expired or unusable held sentence is never heard, and a claim that finds
nothing held is synthesized as usual."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from glyphoxa_audio.opus import OpusDecoder
from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_events.models import Flush
from glyphoxa_tts import metrics
from tests.unit.tts.test_tts_core import Harness
from tests.unit.tts.tts_helpers import ScriptedProvider, reply, until

pytestmark = pytest.mark.unit

SENTENCE = "Forty gold, and not a copper less."


class Counting(ScriptedProvider):
    """The scripted provider, remembering every text it was asked to say."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.texts: list[str] = []

    async def _synthesize_impl(self, text: str, voice: VoiceSpec, pitch: float, tempo: float
                               ) -> AsyncIterator[np.ndarray]:
        self.texts.append(text)
        async for pcm in super()._synthesize_impl(text, voice, pitch, tempo):
            yield pcm


def held_count(result: str) -> float:
    return metrics.HELD.labels(result=result)._value.get()


def turns_of(h: Harness) -> set[str]:
    return {f.headers["Glx-Turn"] for f in h.publisher.frames()}


async def test_a_held_sentence_is_made_unheard_then_spoken_at_once_for_its_turn():
    provider = Counting(chunks=3, chunk_s=0.2, delay_s=0.05)
    h = await Harness(provider).start()
    claimed = held_count("claimed")
    try:
        await h.session.on_message(reply("alex-1.guess1", 0, SENTENCE, hold=True, seq=1))
        await until(lambda: provider.finished_at is not None)
        assert not h.publisher.frames() and not h.done_events()  # nothing heard
        [(usage, _)] = h.publisher.usage()  # the characters were sent: they count
        assert usage.key == "tts:alex-1.guess1:0" and usage.amount == len(SENTENCE)
        assert h.session.retain_from() is None  # a held sentence holds no stream back

        loop = asyncio.get_running_loop()
        at = loop.time()
        end = time.time_ns()
        await h.session.on_message(reply("alex-1", 0, SENTENCE, claims="alex-1.guess1", seq=2,
                                         speech_end_ns=end))
        assert loop.time() - at < 0.1  # no synthesis on the way: the frames were ready
        await h.session.on_message(reply("alex-1", 1, "Dwarven steel.", final=True, seq=3,
                                         speech_end_ns=end))
        assert provider.texts == [SENTENCE, "Dwarven steel."]  # the held one was not redone
        frames = h.publisher.frames()
        assert turns_of(h) == {"alex-1"}
        assert [int(f.headers["Glx-Seq"]) for f in frames] == list(range(len(frames)))
        assert {f.headers["Glx-Speech-End-Ns"] for f in frames} == {str(end)}
        assert len(frames) == 2 * 30  # both sentences, 0.6 s each
        decoder = OpusDecoder(48_000, 2)
        audio = np.concatenate([decoder.decode(f.data) for f in frames])
        assert np.abs(audio[:48_000]).max() > 1000  # the held sentence is sound, not silence
        (done,) = h.done_events()
        assert done.turn_id == "alex-1" and done.frames == len(frames) and not done.cancelled
        assert [u.key for u, _ in h.publisher.usage()] == ["tts:alex-1.guess1:0",
                                                           "tts:alex-1:1"]
        assert held_count("claimed") == claimed + 1
    finally:
        h.close()


async def test_a_claim_while_the_held_sentence_is_still_being_made_streams_it_on():
    provider = Counting(chunks=6, chunk_s=0.1, delay_s=0.1)
    h = await Harness(provider).start()
    try:
        await h.session.on_message(reply("alex-1.guess1", 0, SENTENCE, hold=True))
        await until(lambda: provider.started.is_set())
        await h.session.on_message(reply("alex-1", 0, SENTENCE, claims="alex-1.guess1",
                                         final=True))
        frames = h.publisher.frames()
        assert provider.texts == [SENTENCE] and len(frames) == 6 * 5
        assert provider.finished_at is not None and frames[0].at < provider.finished_at - 0.2
    finally:
        h.close()


async def test_a_discarded_sentence_is_never_heard_and_its_claim_is_made_afresh():
    provider = Counting(chunks=20, chunk_s=0.1, delay_s=0.05)
    h = await Harness(provider).start()
    discarded = held_count("discarded")
    try:
        await h.session.on_message(reply("alex-1.guess1", 0, SENTENCE, hold=True))
        await until(lambda: provider.started.is_set())
        await h.session.on_message(reply("alex-1.guess1", 1, "", hold=True, final=True))
        assert held_count("discarded") == discarded + 1
        assert provider.finished_at is None  # its synthesis was stopped
        await asyncio.sleep(0.1)
        assert not h.publisher.frames() and not h.done_events()
        # replayed after a failover: not made again
        await h.session.on_message(reply("alex-1.guess1", 0, SENTENCE, hold=True))
        assert provider.texts == [SENTENCE]
        # a claim of it (it should not come; if it does) is synthesized as usual
        await h.session.on_message(reply("alex-1", 0, SENTENCE, claims="alex-1.guess1",
                                         final=True))
        assert provider.texts == [SENTENCE, SENTENCE] and turns_of(h) == {"alex-1"}
    finally:
        h.close()


async def test_a_claim_of_other_words_or_another_npc_is_synthesized_afresh():
    provider = Counting(chunks=1, chunk_s=0.2)
    h = await Harness(provider).start()
    try:
        await h.session.on_message(reply("alex-1.guess1", 0, SENTENCE, hold=True))
        await h.session.on_message(reply("bea-1.guess1", 0, SENTENCE, hold=True))
        await until(lambda: len(provider.texts) == 2)
        await h.session.on_message(reply("alex-1", 0, "Fifty gold.", claims="alex-1.guess1",
                                          final=True))
        await h.session.on_message(reply("bea-1", 0, SENTENCE, npc="elira",
                                         claims="bea-1.guess1", final=True))
        assert provider.texts == [SENTENCE, SENTENCE, "Fifty gold.", SENTENCE]
        assert turns_of(h) == {"alex-1", "bea-1"}
    finally:
        h.close()


async def test_an_unclaimed_sentence_expires():
    provider = Counting(chunks=1, chunk_s=0.2)
    h = await Harness(provider, held_ttl_s=0.05).start()
    expired = held_count("expired")
    try:
        await h.session.on_message(reply("alex-1.guess1", 0, SENTENCE, hold=True))
        await h.session.on_tick()
        assert held_count("expired") == expired
        await asyncio.sleep(0.1)
        await h.session.on_tick()
        assert held_count("expired") == expired + 1
        await h.session.on_message(reply("alex-1", 0, SENTENCE, claims="alex-1.guess1",
                                         final=True))
        assert provider.texts == [SENTENCE, SENTENCE] and h.publisher.frames()
    finally:
        h.close()


async def test_a_held_sentence_the_provider_failed_is_spoken_by_the_fallback():
    h = await Harness(ScriptedProvider(fail=RuntimeError("model crashed"))).start()
    try:
        await h.session.on_message(reply("alex-1.guess1", 0, SENTENCE, hold=True))
        await asyncio.sleep(0.05)
        await h.session.on_message(reply("alex-1", 0, SENTENCE, claims="alex-1.guess1",
                                         final=True))
        (done,) = h.done_events()
        assert done.frames > 25 and not done.cancelled  # espeak said it
    finally:
        h.close()


async def test_a_flush_stops_a_claimed_sentence_and_its_synthesis():
    provider = Counting(chunks=50, chunk_s=0.1, delay_s=0.05)
    h = await Harness(provider).start()
    try:
        await h.session.on_message(reply("alex-1.guess1", 0, SENTENCE, hold=True))
        speaking = asyncio.create_task(h.session.on_message(
            reply("alex-1", 0, SENTENCE, claims="alex-1.guess1")))
        await until(lambda: len(h.publisher.frames()) >= 10)
        await h.session.on_control(Flush(turn_id="alex-1"))
        await asyncio.wait_for(speaking, timeout=1)
        (done,) = h.done_events()
        assert done.cancelled and done.frames == len(h.publisher.frames()) < 250
        await asyncio.sleep(0.1)
        assert provider.finished_at is None  # the held synthesis stopped with the turn
    finally:
        h.close()


async def test_held_sentences_end_with_the_session():
    provider = Counting(chunks=50, chunk_s=0.1, delay_s=0.05)
    h = await Harness(provider).start()
    try:
        await h.session.on_message(reply("alex-1.guess1", 0, SENTENCE, hold=True))
        await until(lambda: provider.started.is_set())
        await h.session.close()
        await asyncio.sleep(0.1)
        assert provider.finished_at is None and not h.publisher.frames()
    finally:
        h.close()


def _messages(h: Harness) -> list[tuple[str, str]]:
    return [(m.headers["Glx-Seq"], m.headers.get("Glx-Frames", "1")) for m in h.publisher.messages()]


async def test_held_frames_go_out_in_the_messages_the_same_sentence_made_afresh_would():
    """A replica that redoes a turn after a failover has no held audio: it synthesizes the
    sentence afresh. Its messages must have the ids (first frames) of the first replica's,
    which played the held audio, or the stream would hold frames twice (ADR 0010)."""
    held = await Harness(Counting(chunks=4, chunk_s=0.3, delay_s=0.02),
                         frames_per_message=10).start()
    fresh = await Harness(Counting(chunks=4, chunk_s=0.3, delay_s=0.02),
                          frames_per_message=10).start()
    try:
        await held.session.on_message(reply("alex-1.guess1", 0, SENTENCE, hold=True, seq=1))
        await asyncio.sleep(0.05)  # a claim once some pieces of the held sentence are made
        await held.session.on_message(reply("alex-1", 0, SENTENCE, claims="alex-1.guess1",
                                            final=True, seq=2))
        await fresh.session.on_message(reply("alex-1", 0, SENTENCE, final=True, seq=2))
        assert _messages(held) == _messages(fresh)
        assert _messages(held)[:3] == [("0", "1"), ("1", "10"), ("11", "4")]  # 15 frames a piece
    finally:
        held.close()
        fresh.close()
