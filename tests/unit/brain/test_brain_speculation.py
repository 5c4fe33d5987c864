"""Replies started on interim transcripts (``BRAIN_SPECULATE``): adopted when the final says
the same words to the same NPC, discarded (its tokens still counted) otherwise; nothing is
published before the final but the guess's first sentence, held for tts
(``BRAIN_SPECULATE_AUDIO``), which the adopting turn claims or the guess discards."""

from __future__ import annotations

import asyncio

import pytest

from glyphoxa_events.models import Outcome
from glyphoxa_npc_brain.config import TurnPolicy
from glyphoxa_npc_brain.llm.fake import FakeLLM
from glyphoxa_npc_brain.speculation import same_words
from tests.unit.brain.brain_fakes import make_handler, metric, started, transcript_msg

pytestmark = pytest.mark.unit

LINE = "Greta, how much for the axe?"


class Counting(FakeLLM):
    """The fake LLM, slow to its first word, counting its calls."""

    def __init__(self, first_word_s: float = 0.2) -> None:
        super().__init__()
        self.first_word_s, self.n_calls, self.prompts = first_word_s, 0, []

    async def _stream_impl(self, system, messages, *, max_tokens, seed, cancel, stats):
        self.n_calls += 1
        self.prompts.append(messages[-1].content)
        stats.prompt_tokens = 7  # the prompt went out: it costs, even if the guess is dropped
        await asyncio.sleep(self.first_word_s)
        async for piece in super()._stream_impl(system, messages, max_tokens=max_tokens,
                                                seed=seed, cancel=cancel, stats=stats):
            yield piece


def speculating(llm: FakeLLM):  # type: ignore[no-untyped-def]
    return make_handler(llm, policy=TurnPolicy(speculate=True))


async def test_a_confirmed_guess_is_the_reply_and_comes_sooner() -> None:
    llm = Counting(first_word_s=0.3)
    handler, sink, metrics = speculating(llm)
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, how much for the", utt="alex-1", final=False))
    await asyncio.sleep(0.02)
    await handler.on_message(transcript_msg("greta how much for the axe", utt="alex-1", final=False))
    assert not sink.chunks() and not sink.turns()  # a guess publishes no reply of its own
    await asyncio.sleep(0.3)  # vad's silence: the guess is under way meanwhile
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    await handler.on_message(transcript_msg(LINE, utt="alex-1"))
    took = loop.time() - started_at
    ended = sink.turn("alex-1")
    assert ended.outcome == Outcome.answered and ended.reply_text.startswith("Aye")
    assert took < 0.25  # the LLM's 0.3 s to the first word were spent before the final
    assert llm.n_calls == 2  # the first wording's guess, then the second's (kept)
    assert metric(metrics, "glyphoxa_npc_brain_reply_guesses_total", result="adopted") == 1
    assert metric(metrics, "glyphoxa_npc_brain_reply_guesses_total", result="discarded") == 1
    keys = sorted({u.key for u, _ in sink.usage()})
    assert keys == ["llm:alex-1:0", "llm:alex-1:guess1:0"]  # the discarded guess counted too


async def test_a_final_that_says_something_else_is_answered_afresh() -> None:
    llm = Counting(first_word_s=0.05)
    handler, sink, metrics = speculating(llm)
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, how much for the axe", utt="alex-1",
                                            final=False))
    await handler.on_message(transcript_msg("Greta, how much for the bow?", utt="alex-1"))
    ended = sink.turn("alex-1")
    assert ended.outcome == Outcome.answered
    assert llm.prompts[-1].endswith("Greta, how much for the bow?")
    assert metric(metrics, "glyphoxa_npc_brain_reply_guesses_total", result="discarded") == 1


async def test_table_talk_is_never_guessed_and_a_final_to_nobody_drops_the_guess() -> None:
    llm = Counting(first_word_s=0.05)
    handler, sink, _ = speculating(llm)
    await handler.on_control(started())
    await handler.on_message(transcript_msg("pass me the dice", utt="alex-1", final=False))
    assert llm.n_calls == 0
    await handler.on_message(transcript_msg("Greta, how much", utt="alex-2", final=False))
    await asyncio.sleep(0.02)  # the guess's LLM call is under way
    await handler.on_message(transcript_msg("Great, how much is the pizza?", utt="alex-2"))
    assert sink.turn("alex-2").outcome == Outcome.not_addressed
    assert [u.key for u, _ in sink.usage()][0].startswith("llm:alex-2:guess")


async def test_with_speculation_off_interims_start_nothing() -> None:
    llm = Counting(first_word_s=0.05)
    handler, sink, _ = make_handler(llm, policy=TurnPolicy(speculate=False))
    await handler.on_control(started())
    await handler.on_message(transcript_msg(LINE, utt="alex-1", final=False))
    await asyncio.sleep(0.1)
    assert llm.n_calls == 0 and not sink.published


async def test_guesses_are_closed_with_the_session() -> None:
    llm = Counting(first_word_s=5)
    handler, _, metrics = speculating(llm)
    await handler.on_control(started())
    await handler.on_message(transcript_msg(LINE, utt="alex-1", final=False))
    await asyncio.sleep(0.05)
    await handler.close()
    assert metric(metrics, "glyphoxa_npc_brain_reply_guesses_total", result="discarded") == 1


async def test_a_serving_given_up_stops_every_guess_though_it_cannot_count_them() -> None:
    """The session is served again (its outbox refuses): close still cancels each guess and
    the priming rather than stopping at the first usage it cannot publish."""
    from glyphoxa_bus.publisher import PublishError
    from tests.unit.brain.brain_fakes import CollectingSink

    class Refusing(CollectingSink):
        refusing = False

        async def publish(self, subject, data, msg_id, headers=None) -> None:  # type: ignore[no-untyped-def]
            if self.refusing:
                raise PublishError("this serving of the session was given up")
            await super().publish(subject, data, msg_id, headers)

    sink = Refusing()
    handler, _, metrics = make_handler(Counting(first_word_s=5), TurnPolicy(speculate=True), sink)
    await handler.on_control(started())
    for n in (1, 2):
        await handler.on_message(transcript_msg(LINE, utt=f"alex-{n}", final=False))
    await asyncio.sleep(0.05)
    sink.refusing = True
    with pytest.raises(PublishError):
        await handler.close()
    assert metric(metrics, "glyphoxa_npc_brain_reply_guesses_total", result="discarded") == 2


def test_same_words() -> None:
    assert same_words("Greta, how much for the AXE?") == same_words("greta how much for the axe")
    assert same_words("Greta's axe.") == "greta's axe"


async def test_a_gm_line_meanwhile_makes_the_guess_stale() -> None:
    from glyphoxa_events.models import NpcSpeak

    llm = Counting(first_word_s=0.05)
    handler, sink, metrics = speculating(llm)
    await handler.on_control(started())
    await handler.on_message(transcript_msg(LINE, utt="alex-1", final=False))
    await asyncio.sleep(0.02)
    await handler.on_control(NpcSpeak(npc="greta", text="Out of my forge!", request_id="gm-1"))
    await handler.on_message(transcript_msg(LINE, utt="alex-1"))
    assert sink.turn("alex-1").outcome == Outcome.answered
    assert metric(metrics, "glyphoxa_npc_brain_reply_guesses_total", result="adopted") == 0
    assert llm.n_calls == 2  # answered afresh, with the GM's line known
    await handler.close()


async def test_a_guess_holds_its_first_sentence_and_the_adopting_turn_claims_it() -> None:
    llm = Counting(first_word_s=0.05)
    handler, sink, _ = speculating(llm)
    await handler.on_control(started())
    await handler.on_message(transcript_msg(LINE, utt="alex-1", final=False))
    await asyncio.sleep(0.2)  # the guess's first sentence is out, held
    [held] = sink.chunks("alex-1.guess1")
    assert held.hold and held.index == 0 and not held.final and held.text.startswith("Aye")
    assert not sink.chunks("alex-1")  # nothing of the turn itself yet
    await handler.on_message(transcript_msg(LINE, utt="alex-1"))
    first = sink.chunks("alex-1")[0]
    assert first.claims == "alex-1.guess1" and first.text == held.text and not first.hold
    assert all(c.claims is None for c in sink.chunks("alex-1")[1:])
    assert len(sink.chunks("alex-1.guess1")) == 1  # claimed: no discard follows
    await handler.close()
    assert len(sink.chunks("alex-1.guess1")) == 1


async def test_a_dropped_guess_discards_its_held_sentence() -> None:
    llm = Counting(first_word_s=0.02)
    handler, sink, _ = speculating(llm)
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, how much for the axe", utt="alex-1",
                                            final=False))
    await asyncio.sleep(0.2)
    await handler.on_message(transcript_msg("Greta, how much for the bow?", utt="alex-1"))
    held, discard = sink.chunks("alex-1.guess1")
    assert held.hold and held.text and not held.final
    assert discard.hold and discard.index == 1 and discard.final and discard.text == ""
    assert all(c.claims is None for c in sink.chunks("alex-1"))  # answered afresh
    # the discard goes out before the turn's own chunks
    order = [c.turn_id for c in sink.chunks()]
    assert order[:2] == ["alex-1.guess1", "alex-1.guess1"]


async def test_a_turn_that_says_another_first_sentence_discards_the_held_one() -> None:
    llm = Counting(first_word_s=0.02)
    handler, sink, _ = speculating(llm)
    await handler.on_control(started())
    await handler.on_message(transcript_msg(LINE, utt="alex-1", final=False))
    await asyncio.sleep(0.2)
    guess = handler._guesses["alex-1"]
    assert guess.held is not None
    assert await guess.held.claim("Something else entirely.") is None
    [_, discard] = sink.chunks("alex-1.guess1")
    assert discard.final and discard.text == ""
    await handler.close()


async def test_without_speculate_audio_nothing_is_held() -> None:
    llm = Counting(first_word_s=0.02)
    handler, sink, _ = make_handler(llm, policy=TurnPolicy(speculate=True,
                                                             speculate_audio=False))
    await handler.on_control(started())
    await handler.on_message(transcript_msg(LINE, utt="alex-1", final=False))
    await asyncio.sleep(0.2)
    assert not sink.chunks()
    await handler.on_message(transcript_msg(LINE, utt="alex-1"))
    assert sink.chunks("alex-1") and all(c.claims is None for c in sink.chunks("alex-1"))
