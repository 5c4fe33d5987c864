"""The brain's session handler with the fake LLM and a collecting sink (no NATS)."""

from __future__ import annotations

import asyncio

import pytest

from glyphoxa_bus.session import InputMessage
from glyphoxa_events import headers as H
from glyphoxa_events.models import (
    AudioDone,
    BargeIn,
    FailureStage,
    Flush,
    MalformedEvent,
    NpcMute,
    NpcSpeak,
    Outcome,
    Played,
    Speaker,
    Transcript,
    TurnEnded,
    TurnFailure,
    TurnLatency,
)
from glyphoxa_npc_brain.config import TurnPolicy
from glyphoxa_npc_brain.llm.fake import FakeLLM
from glyphoxa_npc_brain.turn import out_of_character, seed_for
from glyphoxa_runtime.providers import ProviderError
from tests.unit.brain.brain_fakes import (
    SECOND,
    SUBJECTS,
    CollectingSink,
    campaign,
    make_handler,
    metric,
    raw_msg,
    started,
    transcript_msg,
)

pytestmark = pytest.mark.unit

LONG_REPLY = "Aye. " + " ".join(f"Word number {n} is here." for n in range(40))


async def test_with_first_clause_the_reply_starts_with_its_first_clause() -> None:
    """BRAIN_FIRST_CLAUSE: "Aye," goes to tts before the rest of its sentence is written; the
    clause is not one of the reply's max_sentences, and the reply's text is unchanged."""
    handler, sink, _ = make_handler(policy=TurnPolicy(first_clause=True, max_sentences=3))
    await handler.on_control(started())
    await handler.on_message(
        transcript_msg("Greta, how much for the longsword?", utt="alex-7", end_s=10)
    )
    chunks = sink.chunks("alex-7")
    assert [c.text for c in chunks] == [
        "Aye,", "that I can do.", "The longsword, you say?", "Come back at dawn."]
    assert [c.final for c in chunks] == [False, False, False, True]
    assert sink.turn("alex-7").reply_text == "Aye, that I can do. The longsword, you say? Come back at dawn."


async def test_addressed_line_is_answered_sentence_by_sentence() -> None:
    handler, sink, metrics = make_handler()
    await handler.on_control(started())
    await handler.on_message(
        transcript_msg("Greta, how much for the longsword?", utt="alex-7", end_s=10)
    )

    chunks = sink.chunks("alex-7")
    assert [c.text for c in chunks] == [
        "Aye, that I can do.",
        "The longsword, you say?",
        "Come back at dawn.",
    ]
    assert [c.index for c in chunks] == [0, 1, 2]
    assert [c.final for c in chunks] == [False, False, True]
    assert all(c.npc == "greta" and c.speech_end_ns == 10 * SECOND for c in chunks)
    replies = [p for p in sink.published if ".reply." in p.subject]
    assert {p.subject for p in replies} == {"glx.acme.s1.reply.greta"}
    assert [p.msg_id for p in replies] == [f"reply:acme.s1:alex-7:{i}" for i in range(3)]
    assert all(p.headers == {H.TURN: "alex-7"} for p in replies)

    turn = sink.turn("alex-7")
    published = sink.published[-1]
    assert (published.subject, published.msg_id) == (
        "glx.acme.s1.ctl.turn",
        "ctl:acme.s1:turn:alex-7",
    )
    assert (turn.outcome, turn.npc, turn.speaker) == (Outcome.answered, "greta", "alex")
    assert turn.reply_text == "Aye, that I can do. The longsword, you say? Come back at dawn."
    lat = turn.latency
    assert (lat.speech_end_ns, lat.vad_end_ns, lat.stt_final_ns) == (
        10 * SECOND,
        10 * SECOND + 5,
        10 * SECOND + 7,
    )
    assert 0 < lat.first_token_ns <= lat.first_sentence_ns
    assert metric(metrics, "glyphoxa_npc_brain_turns_total", outcome="answered") == 1
    assert metric(metrics, "glyphoxa_npc_brain_routing_decisions_total", kind="name_start") == 1
    assert metric(metrics, "glyphoxa_npc_brain_first_sentence_seconds_count") == 1
    assert (
        metric(metrics, "glyphoxa_npc_brain_llm_tokens_total", provider="fake", direction="out") > 0
    )


async def test_every_final_transcript_is_exactly_one_turn_and_partials_none() -> None:
    handler, sink, metrics = make_handler()
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, how mu", final=False, utt="alex-1", end_s=9))
    await handler.on_message(transcript_msg("Greta, how much?", utt="alex-1", end_s=10))
    await handler.on_message(
        transcript_msg("I roll for perception.", utt="sam-2", speaker="sam", end_s=12)
    )
    await handler.on_message(
        transcript_msg("What a day.", utt="jordan-3", speaker="jordan", end_s=90)
    )

    assert [(t.turn_id, t.outcome) for t in sink.turns()] == [
        ("alex-1", Outcome.answered),
        ("sam-2", Outcome.not_addressed),
        ("jordan-3", Outcome.not_addressed),
    ]
    assert "mechanics" in sink.turn("sam-2").reason
    assert sink.turn("sam-2").npc is None and sink.chunks("sam-2") == []
    assert metric(metrics, "glyphoxa_npc_brain_turns_total", outcome="not_addressed") == 2
    assert metric(metrics, "glyphoxa_npc_brain_turns_total", outcome="not_addressed",
                  reason="table_talk_cue") == 1
    assert metric(metrics, "glyphoxa_npc_brain_turns_total", reason="name_start_exact") == 1
    explained = sink.turn("sam-2").routing
    assert explained is not None and (explained.kind, explained.cue) == ("table_talk", "mechanics")
    late = sink.turn("jordan-3").routing
    assert late is not None and (late.kind, late.last_npc, late.since_last_ms) == (
        "none", "greta", 80_000)
    assert metric(metrics, "glyphoxa_npc_brain_routing_decisions_total", kind="table_talk") == 1
    assert metric(metrics, "glyphoxa_npc_brain_routing_decisions_total", kind="none") == 1


async def test_follow_up_from_another_player_goes_to_the_same_npc() -> None:
    handler, sink, metrics = make_handler()
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Aldric, two rooms please.", utt="alex-1", end_s=10))
    await handler.on_message(
        transcript_msg("Is the stew fresh?", speaker="sam", utt="sam-2", end_s=20)
    )
    turn = sink.turn("sam-2")
    assert (turn.outcome, turn.npc, turn.reason) == (
        Outcome.answered,
        "aldric",
        "follow-up to Aldric",
    )
    assert turn.routing is not None and (turn.routing.npc, turn.routing.since_last_ms) == (
        "aldric", 10_000)
    assert turn.failure is None
    assert metric(metrics, "glyphoxa_npc_brain_turns_total", outcome="answered",
                  reason="followup") == 1
    assert metric(metrics, "glyphoxa_npc_brain_routing_decisions_total", kind="followup") == 1


async def test_malformed_transcripts_are_rejected_and_the_next_one_is_answered() -> None:
    handler, sink, _ = make_handler()
    await handler.on_control(started())
    for bad in (b"not json", b'{"utterance_id": "x"}', b"{" * 70_000):
        with pytest.raises(MalformedEvent):
            await handler.on_message(raw_msg(bad))
    spoofed = transcript_msg("Greta, hello", speaker="sam")
    with pytest.raises(MalformedEvent, match="does not match"):
        await handler.on_message(type(spoofed)(SUBJECTS.stt("alex"), spoofed.data, {}, 99))
    await handler.on_message(transcript_msg("Greta, hello!", utt="alex-5"))
    assert [t.turn_id for t in sink.turns()] == ["alex-5"]


async def test_a_line_stt_could_not_hear_is_a_failed_turn_not_table_talk() -> None:
    handler, sink, metrics = make_handler()
    await handler.on_control(started())
    msg = transcript_msg("", utt="alex-1", end_s=10)
    data = Transcript.model_validate_json(msg.data).model_copy(
        update={"error": "speech recognition failed"}).to_bytes()
    await handler.on_message(InputMessage(msg.subject, data, msg.headers, msg.stream_seq))
    [turn] = sink.turns()
    assert turn.outcome == Outcome.failed and turn.reason == "stt: speech recognition failed"
    assert turn.failure == TurnFailure(stage=FailureStage.stt, provider=None,
                                       error="speech recognition failed", retryable=None)
    assert sink.chunks("alex-1") == []
    assert metric(metrics, "glyphoxa_npc_brain_turns_total", outcome="failed", reason="none") == 1


async def test_muted_npcs_do_not_answer() -> None:
    handler, sink, metrics = make_handler()
    await handler.on_control(started())
    await handler.on_control(NpcMute(npc="greta", muted=True))
    await handler.on_message(transcript_msg("Greta, hello!", utt="alex-1", end_s=10))
    await handler.on_message(transcript_msg("Aldric, hello!", utt="alex-2", end_s=20))
    await handler.on_control(NpcMute(npc="*", muted=True))
    await handler.on_message(transcript_msg("Aldric, hello?", utt="alex-3", end_s=30))
    await handler.on_control(NpcMute(npc="*", muted=False))
    await handler.on_message(transcript_msg("Greta, now?", utt="alex-4", end_s=40))

    outcomes = [(t.turn_id, t.outcome, t.npc) for t in sink.turns()]
    assert outcomes == [
        ("alex-1", Outcome.muted, "greta"),
        ("alex-2", Outcome.answered, "aldric"),
        ("alex-3", Outcome.muted, "aldric"),
        ("alex-4", Outcome.answered, "greta"),
    ]
    assert sink.chunks("alex-1") == [] and sink.chunks("alex-3") == []
    assert metric(metrics, "glyphoxa_npc_brain_turns_total", outcome="muted") == 2


async def _run_until_first_chunk(handler, sink, msg) -> asyncio.Task[None]:
    task = asyncio.create_task(handler.on_message(msg))
    for _ in range(500):
        if sink.chunks():
            return task
        await asyncio.sleep(0.01)
    raise AssertionError("no chunk published")


async def test_edge_flush_on_barge_in_cancels_the_turn_and_stops_the_llm() -> None:
    llm = FakeLLM(LONG_REPLY, token_delay_s=0.01)
    handler, sink, metrics = make_handler(llm, TurnPolicy(max_sentences=50, max_tokens=1000))
    await handler.on_control(started())
    task = await _run_until_first_chunk(
        handler, sink, transcript_msg("Greta, talk!", utt="alex-1", end_s=10)
    )
    assert handler.retain_from() is not None
    await handler.on_control(Flush(reason="bargein"))
    await asyncio.wait_for(task, 2)

    turn = sink.turn("alex-1")
    assert turn.outcome == Outcome.cancelled and "bargein" in turn.reason
    assert turn.failure == TurnFailure(stage=FailureStage.llm, provider="fake",
                                       error="flush: bargein", retryable=False)
    assert turn.routing is not None and turn.routing.label == "name_start_exact"
    assert llm.last_stats.completion_tokens < len(LONG_REPLY.split()) // 2  # it really stopped
    chunks = sink.chunks("alex-1")
    assert chunks[-1].final and chunks[-1].text == ""  # tts learns the reply is over
    assert turn.reply_text == " ".join(c.text for c in chunks if c.text)
    assert handler.retain_from() is None
    assert metric(metrics, "glyphoxa_npc_brain_turns_total", outcome="cancelled") == 1


async def test_a_raw_barge_in_or_anothers_flush_does_not_cancel_the_turn() -> None:
    llm = FakeLLM(LONG_REPLY, token_delay_s=0.002)
    handler, sink, _ = make_handler(llm, TurnPolicy(max_sentences=5, max_tokens=1000))
    await handler.on_control(started())
    task = await _run_until_first_chunk(
        handler, sink, transcript_msg("Greta, talk!", utt="alex-1", end_s=10)
    )
    await handler.on_control(BargeIn(speaker="sam", at_ns=11 * SECOND))  # the edge decides
    await handler.on_control(Flush(turn_id="alex-0"))  # someone else's turn
    await asyncio.wait_for(task, 5)
    assert sink.turn("alex-1").outcome == Outcome.answered


async def test_flush_of_the_turn_cancels_it() -> None:
    llm = FakeLLM(LONG_REPLY, token_delay_s=0.01)
    handler, sink, _ = make_handler(llm, TurnPolicy(max_sentences=50, max_tokens=1000))
    await handler.on_control(started())
    task = await _run_until_first_chunk(
        handler, sink, transcript_msg("Greta, talk!", utt="alex-1", end_s=10)
    )
    await handler.on_control(Flush(turn_id="alex-1", reason="gm"))
    await asyncio.wait_for(task, 2)
    assert (sink.turn("alex-1").outcome, sink.turn("alex-1").reason) == (
        Outcome.cancelled,
        "flush: gm",
    )


async def test_reply_is_capped_in_sentences_and_the_last_one_is_final() -> None:
    llm = FakeLLM(LONG_REPLY)
    handler, sink, _ = make_handler(llm, TurnPolicy(max_sentences=2, max_tokens=1000))
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, talk!", utt="alex-1"))
    chunks = sink.chunks("alex-1")
    assert [(c.text, c.final) for c in chunks] == [
        ("Aye.", False),
        ("Word number 0 is here.", True),
    ]
    assert llm.last_stats.completion_tokens < 15


async def test_reply_is_capped_in_tokens_and_the_remainder_flushed() -> None:
    handler, sink, _ = make_handler(
        FakeLLM("Aye, come back at dawn and bring"), TurnPolicy(max_tokens=4)
    )
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, talk!", utt="alex-1"))
    assert [(c.text, c.final) for c in sink.chunks("alex-1")] == [("Aye, come back at", True)]


async def test_a_reply_with_nothing_to_say_out_loud_is_a_failed_turn_closed_by_an_empty_chunk() -> None:
    handler, sink, _ = make_handler(FakeLLM("*nods slowly* \U0001f528"))
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, deal?", utt="alex-1"))
    assert [(c.text, c.final, c.index) for c in sink.chunks("alex-1")] == [("", True, 0)]
    turn = sink.turn("alex-1")  # nobody heard an answer: the table must not think there was one
    assert (turn.outcome, turn.reply_text) == (Outcome.failed, "")
    assert turn.reason == "the model gave no usable reply"


async def test_voice_unsafe_text_is_cleaned_before_publishing() -> None:
    handler, sink, _ = make_handler(
        FakeLLM("Greta: *wipes hands* **Fifteen** gold. \U0001f4b0 Deal?")
    )
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, price?", utt="alex-1"))
    assert [c.text for c in sink.chunks("alex-1")] == ["Fifteen gold.", "Deal?"]


class HangingLLM(FakeLLM):
    async def _stream_impl(self, *args, **kwargs):  # type: ignore[override]
        yield "Aye. "
        await asyncio.sleep(3600)


class FailingLLM(FakeLLM):
    def __init__(self, error: Exception):
        super().__init__()
        self.error, self.attempts = error, 0

    async def _stream_impl(self, *args, **kwargs):  # type: ignore[override]
        self.attempts += 1
        raise self.error
        yield ""  # pragma: no cover


async def test_a_turn_that_takes_too_long_times_out() -> None:
    handler, sink, metrics = make_handler(HangingLLM(), TurnPolicy(turn_timeout_s=0.2))
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, well?", utt="alex-1"))
    turn = sink.turn("alex-1")
    assert turn.outcome == Outcome.timed_out
    assert turn.failure == TurnFailure(stage=FailureStage.llm, provider="fake",
                                       error="no complete reply within 0.2 s", retryable=True)
    assert [(c.text, c.final) for c in sink.chunks("alex-1")] == [("Aye.", False), ("", True)]
    assert metric(metrics, "glyphoxa_npc_brain_turns_total", outcome="timed_out") == 1


async def test_provider_errors_fail_the_turn_with_a_reason() -> None:
    llm = FailingLLM(ProviderError("fake", "model exploded", retryable=False))
    handler, sink, metrics = make_handler(llm)
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, well?", utt="alex-1"))
    turn = sink.turn("alex-1")
    assert (turn.outcome, turn.reason) == (Outcome.failed, "fake: model exploded")
    assert turn.failure == TurnFailure(stage=FailureStage.llm, provider="fake",
                                       error="fake: model exploded", retryable=False)
    assert sink.chunks("alex-1") == [] and llm.attempts == 1
    assert metric(metrics, "glyphoxa_npc_brain_turns_total", outcome="failed",
                  reason="name_start_exact") == 1


async def test_retryable_errors_are_retried_once_then_fail() -> None:
    llm = FailingLLM(ProviderError("fake", "busy", retryable=True))
    handler, sink, _ = make_handler(llm)
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, well?", utt="alex-1"))
    assert sink.turn("alex-1").outcome == Outcome.failed and llm.attempts == 2


async def test_replies_are_seeded_by_the_turn_id_so_a_redo_publishes_the_same_chunks() -> None:
    outputs = []
    for _ in range(2):
        llm = FakeLLM()
        handler, sink, _ = make_handler(llm)
        await handler.on_control(started())
        await handler.on_message(transcript_msg("Greta, how much for the axe?", utt="alex-42"))
        outputs.append([(p.msg_id, p.data) for p in sink.published if ".reply." in p.subject])
        assert llm.calls[0][3] == seed_for("alex-42")
    assert outputs[0] == outputs[1]
    assert seed_for("alex-42") != seed_for("alex-43")


def _ended(
    turn_id: str,
    npc: str | None,
    text: str,
    reply: str,
    end_s: float,
    outcome: Outcome = Outcome.answered,
    speaker: str = "alex",
) -> TurnEnded:
    return TurnEnded(
        turn_id=turn_id,
        speaker=speaker,
        transcript=text,
        npc=npc,
        outcome=outcome,
        reply_text=reply,
        latency=TurnLatency(speech_end_ns=int(end_s * SECOND)),
    )


async def test_state_is_rebuilt_from_replayed_control_events() -> None:
    """A replica taking over mid-session continues the conversation where it was."""
    llm = FakeLLM()
    handler, sink, _ = make_handler(llm)
    # Greta and Aldric overhear each other: Greta witnessed what was said to Aldric
    market = campaign(scenes={"Greta": "market", "Aldric": "market"}, overhear=True)
    for event in [
        started(market),
        Speaker(speaker="alex", display_name="Alex the Bold"),
        _ended("alex-1", "greta", "Greta, how much for the sword?", "Fifteen gold.", 10),
        Played(turn_id="alex-1", npc="greta", text_heard="Fifteen gold.", complete=True),
        _ended("sam-2", "aldric", "Aldric, a room?", "Two silver. Upstairs on the left.", 20),
        Played(turn_id="sam-2", npc="aldric", text_heard="Two silver.", complete=False),
        _ended("sam-3", None, "I roll for perception.", "", 25, Outcome.not_addressed),
        _ended("alex-4", "greta", "Greta, and the axe?", "Ten more.", 30, Outcome.cancelled),
        NpcMute(npc="mirela", muted=True),
    ]:
        await handler.on_control(event)

    # the transcript of a turn that already ended before the failover is not answered again
    await handler.on_message(
        transcript_msg("Aldric, a room?", speaker="sam", utt="sam-2", end_s=20)
    )
    assert sink.published == []

    await handler.on_message(
        transcript_msg("Could you sharpen it by dawn?", utt="alex-5", end_s=40)
    )
    turn = sink.turn("alex-5")
    assert (turn.outcome, turn.npc, turn.reason) == (
        Outcome.answered,
        "greta",
        "follow-up to Greta",
    )
    system, messages, _, _ = llm.calls[-1]
    assert system.startswith("You are Greta.")
    history = [(m.role, m.content) for m in messages]
    assert history[:2] == [
        ("user", "Greta, how much for the sword?"),
        ("assistant", "Fifteen gold."),
    ]
    assert "Ten more." not in str(history)  # cancelled and never heard: not in memory
    assert (
        'Alex the Bold said to Aldric: "Aldric, a room?" Aldric said: "Two silver."'
        in history[-1][1]
    )
    assert history[-1][1].endswith("Could you sharpen it by dawn?")

    await handler.on_message(transcript_msg("Mirela, hello?", utt="alex-6", end_s=50))
    assert sink.turn("alex-6").outcome == Outcome.muted


async def test_what_players_heard_of_a_cancelled_turn_enters_memory() -> None:
    llm = FakeLLM()
    handler, _, _ = make_handler(llm)
    await handler.on_control(started())
    await handler.on_control(
        _ended("alex-1", "greta", "Greta, the price?", "Fifteen gold. Firm.", 10, Outcome.cancelled)
    )
    await handler.on_control(
        Played(turn_id="alex-1", npc="greta", text_heard="Fifteen gold.", complete=False)
    )
    await handler.on_message(transcript_msg("Greta, really?", utt="alex-2", end_s=20))
    messages = llm.calls[-1][1]
    assert [(m.role, m.content) for m in messages[:2]] == [
        ("user", "Greta, the price?"),
        ("assistant", "Fifteen gold."),
    ]


async def test_heard_whole_without_the_text_keeps_the_reply() -> None:
    llm = FakeLLM()
    handler, _, _ = make_handler(llm)
    await handler.on_control(started())
    await handler.on_control(
        _ended("alex-1", "greta", "Greta, the price?", "Fifteen gold. Firm.", 10, Outcome.answered)
    )
    await handler.on_control(Played(turn_id="alex-1", npc="greta", text_heard="", complete=True))
    await handler.on_message(transcript_msg("Greta, really?", utt="alex-2", end_s=20))
    assert ("assistant", "Fifteen gold. Firm.") in [(m.role, m.content) for m in llm.calls[-1][1]]


async def test_own_turn_events_coming_back_change_nothing() -> None:
    llm = FakeLLM()
    handler, sink, _ = make_handler(llm)
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, hi!", utt="alex-1", end_s=10))
    await handler.on_control(sink.turn("alex-1"))  # the echo of our own event
    await handler.on_message(transcript_msg("Greta, again!", utt="alex-2", end_s=20))
    roles = [m.role for m in llm.calls[-1][1]]
    assert roles == ["user", "assistant", "user"]


async def test_gm_puppets_an_npc_without_the_llm() -> None:
    clock = [100.0]
    llm = FakeLLM()
    handler, sink, _ = make_handler(llm, monotonic=lambda: clock[0])
    await handler.on_control(started())
    await handler.on_control(NpcSpeak(npc="greta", text="Out of my forge! Now.", request_id="gm-1"))
    await handler.on_tick()
    assert sink.chunks() == []  # waits a moment: a replayed line may turn out to be spoken already
    clock[0] += 1
    await handler.on_tick()
    chunks = sink.chunks("gm-1")
    assert [(c.text, c.final, c.npc) for c in chunks] == [
        ("Out of my forge!", False, "greta"),
        ("Now.", True, "greta"),
    ]
    assert [p.msg_id for p in sink.published] == ["reply:acme.s1:gm-1:0", "reply:acme.s1:gm-1:1"]
    assert llm.calls == [] and sink.turns() == []


async def test_a_replayed_gm_line_that_was_already_spoken_is_not_spoken_again() -> None:
    clock = [100.0]
    handler, sink, _ = make_handler(monotonic=lambda: clock[0])
    await handler.on_control(started())
    await handler.on_control(NpcSpeak(npc="greta", text="Out!", request_id="gm-1"))
    await handler.on_control(AudioDone(turn_id="gm-1", npc="greta", frames=10))
    clock[0] += 1
    await handler.on_tick()
    assert sink.published == []


async def test_the_only_npc_answers_without_being_named() -> None:
    handler, sink, _ = make_handler()
    await handler.on_control(started(campaign("Greta")))
    await handler.on_message(transcript_msg("How much for the axe?", utt="alex-1"))
    assert (sink.turn("alex-1").outcome, sink.turn("alex-1").reason) == (
        Outcome.answered,
        "the only NPC present",
    )


async def test_close_is_quick_and_leaves_nothing_running() -> None:
    handler, _, _ = make_handler()
    await handler.on_control(started())
    await handler.close()


async def test_an_unexpected_error_still_ends_the_turn_with_an_event() -> None:
    class BrokenReplies(CollectingSink):
        async def publish(self, subject, data, msg_id, headers=None) -> None:
            if ".reply." in subject:
                raise RuntimeError("bus hiccup")
            await super().publish(subject, data, msg_id, headers)

    handler, sink, metrics = make_handler(sink=BrokenReplies())
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, hello!", utt="alex-1"))
    turn = sink.turn("alex-1")
    assert (turn.outcome, turn.reason) == (Outcome.failed, "internal error: RuntimeError")
    assert turn.failure == TurnFailure(stage=FailureStage.npc_brain, error="internal error: "
                                       "RuntimeError", retryable=False)
    assert metric(metrics, "glyphoxa_npc_brain_turns_total", outcome="failed") == 1


class _RefusesOnce(FakeLLM):
    """Answers the first call like an assistant, the second in character."""

    async def _stream_impl(self, system, messages, *, max_tokens, seed, cancel, stats):
        self._reply = ("I'm sorry, but I can't assist with that." if not self.calls
                       else "Three ales, coming right up.")
        async for piece in super()._stream_impl(system, messages, max_tokens=max_tokens, seed=seed,
                                                cancel=cancel, stats=stats):
            yield piece


async def test_an_out_of_character_refusal_is_never_spoken_and_the_turn_is_retried() -> None:
    llm = _RefusesOnce()
    handler, sink, _ = make_handler(llm)
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, three ales please.", utt="alex-1"))
    spoken = [c.text for c in sink.chunks("alex-1") if c.text]
    assert spoken == ["Three ales, coming right up."]
    assert sink.turn("alex-1").outcome == Outcome.answered
    assert len(llm.calls) == 2 and llm.calls[1][3] == llm.calls[0][3] + 1  # another seed
    retry = llm.calls[1][1]  # only the line, without the context that confused the model
    assert [m.content for m in retry] == ["Greta, three ales please.\n(Answer in character.)"]


async def test_every_llm_call_attempt_is_usage_published_before_the_turn_event() -> None:
    llm = _RefusesOnce()
    handler, sink, _ = make_handler(llm)
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, three ales please.", utt="alex-1"))
    await handler.on_message(transcript_msg("I roll for initiative.", utt="sam-2", speaker="sam"))

    usage = sink.usage()
    assert [(u.key, u.metric, m) for u, m in usage] == [
        (f"llm:alex-1:{n}", metric, f"usage:acme.s1:{metric}:llm:alex-1:{n}")
        for n in (0, 1) for metric in ("llm_tokens_in", "llm_tokens_out")
    ]  # table talk (sam-2) never reached the LLM
    assert all(u.provider == "fake" and u.stage == "npc-brain" for u, _ in usage)
    outs = [u.amount for u, _ in usage if u.metric == "llm_tokens_out"]
    assert outs == [len("I'm sorry, but I can't assist with that.".split()),
                    len("Three ales, coming right up.".split())]
    assert all(u.amount > 0 for u, _ in usage if u.metric == "llm_tokens_in")
    subjects = [p.subject for p in sink.published]
    last_usage = max(i for i, s in enumerate(subjects) if ".usage." in s)
    assert subjects.index("glx.acme.s1.ctl.turn") > last_usage
    assert {s for s in subjects if ".usage." in s} == {"glx.acme.s1.usage.npc-brain"}


@pytest.mark.parametrize(("sentence", "assistant"), [
    ("I'm sorry, but I can't assist with that.", True),
    ("I'm sorry, but I don't have access to real-time information.", True),  # qwen 1.5B, 2026-12-04
    ("As of my last knowledge update, the road was open.", True),
    ("I'm just a virtual assistant.", True),
    ("I don't have access to the captain's quarters.", False),  # in character
    ("Sorry, friend, the forge is cold today.", False),
])
def test_assistant_boilerplate_is_out_of_character(sentence: str, assistant: bool) -> None:
    assert out_of_character(sentence) is assistant


async def test_the_first_sentence_is_written_out_before_the_rest_of_the_reply_is_made() -> None:
    """nats.py writes a publish at the publisher's next wait (its flusher task): the first
    sentence must not wait while the brain goes on with the sentences the LLM gave with it."""

    class FlushingSink(CollectingSink):
        def __init__(self) -> None:
            super().__init__()
            self.written: list[str] = []
            self.written_at_publish: dict[str, list[str]] = {}

        async def publish(self, subject, data, msg_id, headers=None) -> None:  # type: ignore[no-untyped-def]
            await super().publish(subject, data, msg_id, headers)
            self.written_at_publish[msg_id] = list(self.written)
            asyncio.get_running_loop().call_soon(self.written.append, msg_id)  # the flusher

    class OneChunkLLM(FakeLLM):
        """A cloud LLM's stream: several sentences in one network chunk."""

        async def _stream_impl(self, system, messages, **kwargs):  # type: ignore[no-untyped-def]
            async for _ in super()._stream_impl(system, messages, **kwargs):
                pass
            yield "Aye, that I can do. The longsword, you say? Come back at dawn."

    sink = FlushingSink()
    handler, _, _ = make_handler(OneChunkLLM(), sink=sink)
    await handler.on_control(started())
    await handler.on_message(transcript_msg("Greta, how much for the longsword?", utt="alex-8"))
    first, second = "reply:acme.s1:alex-8:0", "reply:acme.s1:alex-8:1"
    assert first in sink.written_at_publish[second]
