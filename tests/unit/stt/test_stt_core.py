"""The stt core driven without NATS: vad utterances in, one final transcript each out."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from glyphoxa_events import headers as H
from glyphoxa_events.models import MalformedEvent, SessionStopped
from glyphoxa_runtime.providers import ProviderError
from glyphoxa_stt.core import Limits, SttSession, campaign_prompt
from glyphoxa_stt.providers.base import SttResult
from glyphoxa_stt.providers.fake import FakeStt
from tests.unit.stt.stt_helpers import campaign, drive, dumps, session_started, tone

pytestmark = pytest.mark.unit


class RecordingStt(FakeStt):
    """The fake provider, keeping the audio of every call."""

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.audio: list[np.ndarray] = []

    async def _transcribe_impl(self, audio, *, prompt, language, keyterms=()):  # type: ignore[no-untyped-def]
        self.audio.append(audio.copy())
        return await super()._transcribe_impl(audio, prompt=prompt, language=language, keyterms=keyterms)


async def test_one_final_transcript_per_utterance(ctx, feed, publisher) -> None:
    stt = SttSession(ctx, FakeStt(["Greta, how much for the longsword?"]))
    await stt.on_control(session_started())
    pcm = tone(1.25)
    await drive(stt, feed.utterance("alex-17", pcm, start_ns=111, speech_end_ns=222, vad_end_ns=333))

    assert len(publisher.published) == 1
    subject, _, msg_id = publisher.published[0]
    assert subject == "glx.t1.s1.stt.alex"
    assert msg_id == "stt:t1.s1:alex-17:final"
    t = publisher.transcripts()[0]
    assert (t.utterance_id, t.speaker, t.final) == ("alex-17", "alex", True)
    assert t.text == "Greta, how much for the longsword?"
    assert (t.start_ns, t.speech_end_ns, t.vad_end_ns) == (111, 222, 333)
    assert t.stt_final_ns > 0 and t.provider == "fake"
    assert t.audio_seconds == pytest.approx(1.25)
    assert stt.retain_from() is None
    [(subject, usage, msg_id)] = publisher.usage
    assert (subject, msg_id) == ("glx.t1.s1.usage.stt", "usage:t1.s1:stt_audio_seconds:stt:alex-17")
    assert (usage.key, usage.metric, usage.provider, usage.stage) == (
        "stt:alex-17", "stt_audio_seconds", "fake", "stt")
    assert usage.amount == pytest.approx(1.25)


async def test_audio_is_put_together_in_chunk_order_once(ctx, feed, publisher) -> None:
    provider = RecordingStt()
    stt = SttSession(ctx, provider)
    pcm = tone(0.3)
    a, b, c = (pcm[i:i + 1600].tobytes() for i in (0, 1600, 3200))
    msgs = [feed.start("alex-1"), feed.audio("alex-1", 2, c), feed.audio("alex-1", 0, a),
            feed.audio("alex-1", 1, b), feed.audio("alex-1", 1, b), feed.end("alex-1", 3)]
    await drive(stt, msgs)
    assert len(provider.audio) == 1
    np.testing.assert_array_equal(provider.audio[0], pcm)


async def test_campaign_names_are_the_prompt(ctx, feed) -> None:
    provider = FakeStt()
    stt = SttSession(ctx, provider)
    await stt.on_control(session_started())
    await stt.on_control(SessionStopped())
    await drive(stt, feed.utterance("alex-1", tone(0.5)))
    assert provider.prompts == [
        "Tabletop RPG session. NPCs: Greta, Aldric, Mirela, Captain Voss, Voss."]


def test_prompt_is_capped() -> None:
    prompt = campaign_prompt(campaign(), max_chars=45)
    assert prompt == "Tabletop RPG session. NPCs: Greta, Aldric."
    assert campaign_prompt(campaign(), max_chars=10) is None


async def test_no_prompt_before_the_session_started(ctx, feed) -> None:
    provider = FakeStt()
    await drive(SttSession(ctx, provider), feed.utterance("alex-1", tone(0.5)))
    assert provider.prompts == [None]


async def test_blank_transcript_still_publishes_a_final(ctx, feed, publisher) -> None:
    stt = SttSession(ctx, FakeStt(["  "]))
    await drive(stt, feed.utterance("alex-1", tone(0.5)))
    [t] = publisher.transcripts()
    assert t.final and t.text.strip() == ""


async def test_speakers_interleave(ctx, feed, publisher) -> None:
    stt = SttSession(ctx, FakeStt(["from sam", "from alex"]))
    alex, sam = feed.utterance("alex-1", tone(0.3)), feed.utterance("sam-4", tone(0.3), "sam")
    msgs = [alex[0], sam[0], alex[1], sam[1], alex[2], sam[2], sam[3], sam[4], alex[3], alex[4]]
    await drive(stt, msgs)
    got = [(t.utterance_id, t.speaker, t.text) for t in publisher.transcripts()]
    assert got == [("sam-4", "sam", "from sam"), ("alex-1", "alex", "from alex")]
    assert [p[0] for p in publisher.published] == ["glx.t1.s1.stt.sam", "glx.t1.s1.stt.alex"]


# --- rejection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject, data, headers",
    [
        ("glx.t1.s1.vad.alex", b"{not json", {H.KIND: "start"}),
        ("glx.t1.s1.vad.alex", dumps({"type": "utterance.started", "utterance_id": "x-1",
                                      "speaker": "alex", "start_ns": 1, "extra": 1}),
         {H.KIND: "start"}),
        ("glx.t1.s1.vad.alex", b"{}", {H.KIND: "partial"}),
        ("glx.t1.s1.vad.alex", b"\x00\x01", {}),
        ("glx.t1.s1.vad.Alex", b"\x00\x01", {H.KIND: "audio", H.UTTERANCE: "a-1", H.SEQ: "0"}),
        ("glx.t1.s1.vad.al*x", b"\x00\x01", {H.KIND: "audio", H.UTTERANCE: "a-1", H.SEQ: "0"}),
        ("glx.t1.s2.vad.alex", b"\x00\x01", {H.KIND: "audio", H.UTTERANCE: "a-1", H.SEQ: "0"}),
        ("glx.t1.s1.vad.alex", b"\x00\x01\x02", {H.KIND: "audio", H.UTTERANCE: "a-1", H.SEQ: "0"}),
        ("glx.t1.s1.vad.alex", b"\x00\x01", {H.KIND: "audio", H.UTTERANCE: "a-1", H.SEQ: "-1"}),
        ("glx.t1.s1.vad.alex", b"\x00\x01", {H.KIND: "audio", H.UTTERANCE: "A B", H.SEQ: "0"}),
        ("glx.t1.s1.vad.alex", b"\x00\x01", {H.KIND: "audio", H.UTTERANCE: "a-1", H.SEQ: "0",
                                             H.SAMPLE_RATE: "48000"}),
        ("glx.t1.s1.vad.sam", dumps({"type": "utterance.started", "utterance_id": "a-1",
                                     "speaker": "alex", "start_ns": 1}), {H.KIND: "start"}),
        ("glx.t1.s1.vad.alex", dumps({"type": "utterance.started", "utterance_id": "a-1",
                                      "speaker": "alex", "start_ns": 1}),
         {H.KIND: "start", H.UTTERANCE: "a-2"}),
        ("glx.t1.s1.vad.alex", b"x" * 70_000, {H.KIND: "end"}),
    ],
    ids=["bad-json", "unknown-field", "unknown-kind", "no-kind", "upper-speaker", "wildcard",
         "other-session", "odd-bytes", "bad-seq", "bad-utterance", "wrong-rate",
         "speaker-mismatch", "header-mismatch", "too-big-json"],
)
async def test_malformed_messages_are_rejected(ctx, feed, subject, data, headers) -> None:
    stt = SttSession(ctx, FakeStt())
    with pytest.raises(MalformedEvent):
        await stt.on_message(feed.raw(subject, data, headers))
    assert stt.retain_from() is None


async def test_audio_and_end_must_come_from_the_utterances_speaker(ctx, feed) -> None:
    stt = SttSession(ctx, FakeStt())
    await stt.on_message(feed.start("alex-1"))
    with pytest.raises(MalformedEvent):
        await stt.on_message(feed.audio("alex-1", 0, b"\x00\x00", speaker="sam"))
    with pytest.raises(MalformedEvent):
        await stt.on_message(feed.end("alex-1", 0, speaker="sam"))
    assert stt.retain_from() == 1


async def test_session_goes_on_after_rejections(ctx, feed, publisher, rejections, caplog) -> None:
    stt = SttSession(ctx, FakeStt(["still here"]))
    bad = [
        feed.raw("glx.t1.s1.vad.alex", b"{oops", {H.KIND: "start"}),
        feed.audio("nobody-9", 0, b"\x00\x00"),
        feed.end("nobody-9", 1),
    ]
    with caplog.at_level(logging.INFO, logger="glyphoxa.stt"):
        await drive(stt, [*bad, *feed.utterance("alex-2", tone(0.4))], rejections)
    assert [t.text for t in publisher.transcripts()] == ["still here"]
    assert rejections.count("malformed") == 1
    assert rejections.count("unknown_utterance") == 2
    assert "unknown utterance nobody-9" in caplog.text


async def test_oversized_utterance_is_rejected_not_transcribed(ctx, feed, publisher, rejections, caplog) -> None:
    provider = RecordingStt(["fits"])
    stt = SttSession(ctx, provider, Limits(max_utterance_s=1.0))
    with caplog.at_level(logging.WARNING, logger="glyphoxa.stt"):
        await drive(stt, feed.utterance("alex-1", tone(2.5)), rejections)
    assert rejections.count("oversized_utterance") == 1
    assert "utterance alex-1 rejected: more than 1 s of audio" in caplog.text
    [t] = publisher.transcripts()
    assert t.utterance_id == "alex-1" and t.text == "" and t.final
    assert t.error == "utterance too long to transcribe"
    assert provider.audio == []
    # the next utterance is served as usual
    await drive(stt, feed.utterance("alex-2", tone(0.5)), rejections)
    assert [t.text for t in publisher.transcripts()] == ["", "fits"]
    # only the audio the recognizer got is usage
    assert [(u.key, u.amount) for _, u, _ in publisher.usage] == [("stt:alex-2", 0.5)]


async def test_open_utterances_are_bounded_dropping_the_oldest(ctx, feed, publisher, rejections) -> None:
    stt = SttSession(ctx, FakeStt(), Limits(max_open_utterances=2))
    await drive(stt, [feed.start("a-1"), feed.start("b-1", "bo"), feed.start("c-1", "cy")], rejections)
    assert rejections.count("too_many_utterances") == 1
    assert stt.retain_from() == 2  # a-1 (seq 1) was dropped; b-1 started at seq 2
    await drive(stt, [feed.end("a-1", 0)], rejections)
    assert publisher.published == []


async def test_duplicate_start_and_late_tail_are_ignored(ctx, feed, publisher, rejections) -> None:
    stt = SttSession(ctx, FakeStt())
    msgs = feed.utterance("alex-1", tone(0.3))
    await drive(stt, msgs, rejections)
    await drive(stt, [feed.start("alex-1"), feed.audio("alex-1", 0, b"\x00\x00"),
                      feed.end("alex-1", 1)], rejections)
    assert len(publisher.published) == 1
    assert rejections.count("duplicate_utterance") == 1
    assert rejections.count("unknown_utterance") == 0


# --- what a replay after failover needs -------------------------------------------------


async def test_retain_from_is_the_start_of_the_oldest_unpublished_utterance(ctx, feed) -> None:
    stt = SttSession(ctx, FakeStt())
    assert stt.retain_from() is None
    a = feed.utterance("alex-1", tone(0.2))  # seqs 1..4
    b = feed.utterance("sam-1", tone(0.2), "sam")  # seqs 5..8
    await drive(stt, a[:2])
    assert stt.retain_from() == 1
    await drive(stt, b[:3])
    assert stt.retain_from() == 1
    await drive(stt, a[2:])  # alex-1 published
    assert stt.retain_from() == 5
    await drive(stt, b[3:])
    assert stt.retain_from() is None


async def test_utterance_that_never_ends_is_abandoned(ctx, feed, publisher) -> None:
    now = [100.0]
    stt = SttSession(ctx, FakeStt(), Limits(utterance_idle_s=10), clock=lambda: now[0])
    await drive(stt, [feed.start("alex-1"), feed.audio("alex-1", 0, tone(0.1).tobytes())])
    now[0] += 9
    await stt.on_tick()
    assert stt.retain_from() == 1
    now[0] += 2
    await stt.on_tick()
    assert stt.retain_from() is None
    assert publisher.published == []


async def test_close_abandons_what_is_open(ctx, feed, publisher) -> None:
    stt = SttSession(ctx, FakeStt())
    await drive(stt, [feed.start("alex-1")])
    await stt.close()
    assert stt.retain_from() is None and publisher.published == []


# --- provider failures ------------------------------------------------------------------


class FlakyStt(FakeStt):
    def __init__(self, failures: list[ProviderError], **kwargs: float):
        super().__init__(["recovered"], **kwargs)
        self.failures = failures
        self.calls = 0

    async def _transcribe_impl(self, audio, *, prompt, language, keyterms=()) -> SttResult:  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return await super()._transcribe_impl(audio, prompt=prompt, language=language, keyterms=keyterms)


async def test_retryable_error_is_retried(ctx, feed, publisher) -> None:
    provider = FlakyStt([ProviderError("fake", "503", retryable=True)], retry_backoff_s=0.0)
    await drive(SttSession(ctx, provider), feed.utterance("alex-1", tone(0.3)))
    assert provider.calls == 2
    assert [t.text for t in publisher.transcripts()] == ["recovered"]


async def test_permanent_error_publishes_an_empty_final(ctx, feed, publisher, caplog) -> None:
    provider = FlakyStt([ProviderError("fake", "bad request")], retry_backoff_s=0.0)
    stt = SttSession(ctx, provider)
    with caplog.at_level(logging.ERROR, logger="glyphoxa.stt"):
        await drive(stt, feed.utterance("alex-1", tone(0.3)))
    assert provider.calls == 1
    [t] = publisher.transcripts()
    assert t.text == "" and t.final and t.audio_seconds == pytest.approx(0.3)
    assert t.error == "speech recognition failed"  # the brain ends the turn as failed
    assert "no stt provider could transcribe the utterance" in caplog.text
    assert stt.retain_from() is None
    # the audio was sent to the recognizer, so it counts even though it failed
    assert [(u.key, u.amount) for _, u, _ in publisher.usage] == [("stt:alex-1", 0.3)]
