"""The tts core without NATS: reply chunks in, opus frames and AudioDone out."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import numpy as np
import pytest

from glyphoxa_audio.opus import OpusDecoder
from glyphoxa_bus.publisher import PublishError
from glyphoxa_bus.session import InputMessage
from glyphoxa_events import headers as H
from glyphoxa_events.models import (
    AudioDone,
    BargeIn,
    Flush,
    MalformedEvent,
    SessionStarted,
    SessionStopped,
    parse_control,
)
from glyphoxa_tts.config import Settings
from glyphoxa_tts.core import BATCHED_FRAMES, TtsSession
from glyphoxa_tts.providers import ProviderSet
from glyphoxa_tts.providers.fake import SECONDS_PER_CHAR
from tests.unit.tts.tts_helpers import (
    CAMPAIGN,
    SUBJECTS,
    CollectingPublisher,
    CountingRejects,
    ScriptedProvider,
    Sent,
    context,
    dominant_f0,
    reply,
    until,
)

pytestmark = pytest.mark.unit


class Harness:
    def __init__(self, provider: ScriptedProvider | None = None, publish_delay_s: float = 0.0,
                 publisher: CollectingPublisher | None = None, pump: asyncio.Lock | None = None,
                 **settings: object):
        self.settings = Settings(provider="fake", **settings)
        self.publisher = publisher or CollectingPublisher(publish_delay_s)
        self.rejects = CountingRejects()
        injected = {"fake": provider} if provider is not None else None
        self.providers = ProviderSet(self.settings, injected)
        self.session = TtsSession(context(self.publisher, self.rejects), self.providers,
                                  self.settings, pump)

    async def start(self) -> Harness:
        await self.session.on_control(SessionStarted(campaign=CAMPAIGN, started_ns=1))
        return self

    def done_events(self) -> list[AudioDone]:
        events = [parse_control(s.data) for s in self.publisher.controls()]
        return [e for e in events if isinstance(e, AudioDone)]

    def close(self) -> None:
        self.providers.close()


@pytest.fixture
async def harness():
    h = await Harness(frames_per_message=BATCHED_FRAMES).start()
    yield h
    h.close()


async def test_turn_becomes_numbered_frames_then_audio_done(harness: Harness):
    first, second = "Welcome, traveller.", "What will it be?"
    end = time.time_ns()
    await harness.session.on_message(reply("alex-0", 0, first, seq=10, speech_end_ns=end))
    await harness.session.on_message(reply("alex-0", 1, second, seq=11, speech_end_ns=end))
    await harness.session.on_message(reply("alex-0", 2, "", final=True, seq=12, speech_end_ns=end))

    frames = harness.publisher.frames()
    expected = sum(round(len(t) * SECONDS_PER_CHAR / 0.02) for t in (first, second))
    assert abs(len(frames) - expected) <= 2
    for seq, frame in enumerate(frames):
        assert frame.subject == SUBJECTS.audio_out("grom") == "glx.t1.s1.audio.out.grom"
        assert frame.headers["Glx-Turn"] == "alex-0"
        assert frame.headers["Glx-Seq"] == str(seq)
        assert frame.headers["Glx-Speech-End-Ns"] == str(end)
        assert int(frame.headers["Glx-Published-Ns"]) > 0
    # the first frame alone, then up to 10 a message, each message's id its first frame's
    messages = harness.publisher.messages()
    sizes = [int(m.headers.get("Glx-Frames", "1")) for m in messages]
    assert sizes[0] == 1 and max(sizes) == BATCHED_FRAMES and sum(sizes) == len(frames)
    assert len(messages) < len(frames) / 4
    for m in messages:
        assert m.msg_id == f"aout:t1.s1:alex-0:{m.headers['Glx-Seq']}"
    published = [int(m.headers["Glx-Published-Ns"]) for m in messages]
    assert published == sorted(published)

    (done,) = harness.done_events()
    control = harness.publisher.controls()[0]
    assert control.subject == "glx.t1.s1.ctl.audio.done"
    assert control.msg_id == "ctl:t1.s1:audio.done:alex-0"
    assert harness.publisher.sent[-1] is control  # after the last frame
    assert done.turn_id == "alex-0" and done.npc == "grom" and not done.cancelled
    assert done.frames == len(frames)
    assert done.first_audio_ns == published[0]


async def test_characters_sent_to_the_synthesizer_are_usage_once_per_chunk(harness: Harness):
    first, second = "Welcome, traveller.", "What will it be?"
    await harness.session.on_message(reply("alex-0", 0, first, seq=10))
    await harness.session.on_message(reply("alex-0", 1, second, seq=11))
    await harness.session.on_message(reply("alex-0", 2, "", final=True, seq=12))
    await harness.session.on_message(reply("alex-0", 1, second, seq=11))  # a late duplicate
    usage = harness.publisher.usage()
    assert [(u.key, u.metric, u.amount, u.provider, u.stage) for u, _ in usage] == [
        ("tts:alex-0:0", "tts_characters", len(first), "fake", "tts"),
        ("tts:alex-0:1", "tts_characters", len(second), "fake", "tts"),
    ]  # the empty final chunk and the chunk of a finished turn are not synthesized
    assert [m for _, m in usage] == [f"usage:t1.s1:tts_characters:tts:alex-0:{i}" for i in (0, 1)]
    assert {s.subject for s in harness.publisher.sent if ".usage." in s.subject} == {
        "glx.t1.s1.usage.tts"}


async def test_frames_decode_to_the_spoken_audio(harness: Harness):
    await harness.session.on_message(reply("alex-0", 0, "A fine tone of voice.", final=True))
    decoder = OpusDecoder(48_000, 2)
    pcm = [decoder.decode(f.data) for f in harness.publisher.frames()]
    assert all(p.shape == (960, 2) for p in pcm)
    audio = np.concatenate(pcm)
    assert np.array_equal(audio[:, 0], audio[:, 1])  # mono speech on both channels
    assert dominant_f0(audio[:, 0]) == pytest.approx(220, rel=0.05)  # the fake voice's tone


async def test_npc_voice_pitch_reaches_the_frames(harness: Harness):
    await harness.session.on_message(reply("alex-0", 0, "I see them.", npc="elira", final=True))
    decoder = OpusDecoder(48_000, 2)
    audio = np.concatenate([decoder.decode(f.data) for f in harness.publisher.frames()])
    assert dominant_f0(audio[:, 0]) == pytest.approx(220 * 1.3, rel=0.05)
    assert {f.subject for f in harness.publisher.frames()} == {"glx.t1.s1.audio.out.elira"}


async def test_sequence_counts_on_across_sentences_and_restarts_per_turn(harness: Harness):
    await harness.session.on_message(reply("alex-0", 0, "One.", seq=1))
    await harness.session.on_message(reply("alex-0", 1, "Two.", final=True, seq=2))
    await harness.session.on_message(reply("alex-5", 0, "Three.", final=True, seq=3))
    seqs: dict[str, list[int]] = {}
    for f in harness.publisher.frames():
        seqs.setdefault(f.headers["Glx-Turn"], []).append(int(f.headers["Glx-Seq"]))
    assert seqs["alex-0"] == list(range(len(seqs["alex-0"])))
    assert seqs["alex-5"] == list(range(len(seqs["alex-5"])))
    assert [d.turn_id for d in harness.done_events()] == ["alex-0", "alex-5"]


async def test_first_frames_go_out_before_the_sentence_is_synthesized():
    provider = ScriptedProvider(chunks=4, chunk_s=0.2, delay_s=0.1)
    h = await Harness(provider).start()
    try:
        await h.session.on_message(reply("alex-0", 0, "A long sentence.", final=True))
        frames = h.publisher.frames()
        assert provider.finished_at is not None
        assert frames[0].at < provider.finished_at - 0.2  # published while still synthesizing
        assert len(frames) == 4 * 10
    finally:
        h.close()


async def test_flush_cancels_the_turn_being_spoken():
    provider = ScriptedProvider(chunks=50, chunk_s=0.1, delay_s=0.05)
    h = await Harness(provider).start()
    try:
        speaking = asyncio.create_task(h.session.on_message(reply("alex-0", 0, "Long.", seq=4)))
        await until(lambda: len(h.publisher.frames()) >= 10)
        assert h.session.retain_from() == 4
        await h.session.on_control(Flush(turn_id="alex-0"))
        await asyncio.wait_for(speaking, timeout=1)
        published = len(h.publisher.frames())
        (done,) = h.done_events()
        assert done.cancelled and done.frames == published < 250
        assert h.session.retain_from() is None
        # the rest of the turn is dropped
        await h.session.on_message(reply("alex-0", 1, "More words.", seq=5))
        await h.session.on_message(reply("alex-0", 2, "", final=True, seq=6))
        assert len(h.publisher.frames()) == published and len(h.done_events()) == 1
    finally:
        h.close()


async def test_cancel_during_a_publish_counts_the_frame_that_went_out():
    h = await Harness(ScriptedProvider(chunks=20, chunk_s=0.1), publish_delay_s=0.005).start()
    try:
        speaking = asyncio.create_task(h.session.on_message(reply("alex-0", 0, "Long.")))
        await until(lambda: len(h.publisher.frames()) >= 7)
        await h.session.on_control(Flush(turn_id="alex-0"))  # lands inside a publish
        await asyncio.wait_for(speaking, timeout=1)
        (done,) = h.done_events()
        assert done.cancelled and done.frames == len(h.publisher.frames())
    finally:
        h.close()


async def test_a_raw_bargein_does_not_cancel_only_the_edges_flush_does():
    provider = ScriptedProvider(chunks=50, chunk_s=0.1, delay_s=0.05)
    h = await Harness(provider).start()
    try:
        speaking = asyncio.create_task(h.session.on_message(
            reply("alex-0", 0, "Long.")))
        await until(lambda: bool(h.publisher.frames()))
        await h.session.on_control(BargeIn(speaker="bea", at_ns=6_000))  # ADR 0003
        await asyncio.sleep(0.2)
        assert not h.done_events()
        await h.session.on_control(Flush(turn_id="alex-0", reason="bargein"))
        await asyncio.wait_for(speaking, timeout=1)
        (done,) = h.done_events()
        assert done.cancelled and done.turn_id == "alex-0"
    finally:
        h.close()


async def test_flush_by_npc_and_flush_of_a_turn_not_yet_arrived(harness: Harness):
    await harness.session.on_message(reply("alex-0", 0, "Hello.", npc="grom"))
    await harness.session.on_message(reply("bea-0", 0, "Hi.", npc="elira"))
    await harness.session.on_control(Flush(npc="grom"))
    assert [(d.turn_id, d.cancelled) for d in harness.done_events()] == [("alex-0", True)]
    await harness.session.on_control(Flush(turn_id="alex-9"))
    frames = len(harness.publisher.frames())
    await harness.session.on_message(reply("alex-9", 0, "Never heard.", seq=30))
    await harness.session.on_message(reply("alex-9", 1, "", final=True, seq=31))
    assert len(harness.publisher.frames()) == frames
    done = {d.turn_id: d for d in harness.done_events()}
    assert done["alex-9"].cancelled and done["alex-9"].frames == 0
    assert "bea-0" not in done and harness.session.retain_from() is not None


async def test_malformed_chunks_are_rejected_and_the_session_goes_on(harness: Harness):
    subject = SUBJECTS.reply("grom")
    with pytest.raises(MalformedEvent):
        await harness.session.on_message(InputMessage(subject, b"{not json", {}, 1))
    missing = json.dumps({"turn_id": "alex-0", "npc": "grom"}).encode()
    with pytest.raises(MalformedEvent):
        await harness.session.on_message(InputMessage(subject, missing, {}, 2))
    with pytest.raises(MalformedEvent, match="subject"):
        await harness.session.on_message(reply("alex-0", 0, "Hi.", subject_npc="elira"))
    await harness.session.on_message(reply("alex-0", 0, "Who am I?", npc="nobody"))
    assert harness.rejects.reasons == ["unknown_npc"]
    assert not harness.publisher.sent

    await harness.session.on_message(reply("alex-0", 0, "Fine words.", final=True))
    assert harness.publisher.frames() and harness.done_events()[0].frames > 0


async def test_oversized_chunk_is_not_spoken_but_the_turn_still_ends():
    h = await Harness(max_chars=50).start()
    try:
        await h.session.on_message(reply("alex-0", 0, "Short.", seq=1))
        spoken = len(h.publisher.frames())
        await h.session.on_message(reply("alex-0", 1, "word " * 40, final=True, seq=2))
        assert h.rejects.reasons == ["oversized"]
        assert len(h.publisher.frames()) == spoken
        (done,) = h.done_events()
        assert not done.cancelled and done.frames == spoken
    finally:
        h.close()


async def test_retain_from_holds_the_first_chunk_of_an_unfinished_turn(harness: Harness):
    assert harness.session.retain_from() is None
    await harness.session.on_message(reply("alex-0", 0, "One.", seq=5))
    assert harness.session.retain_from() == 5
    await harness.session.on_message(reply("alex-0", 1, "Two.", seq=6))
    assert harness.session.retain_from() == 5
    await harness.session.on_message(reply("alex-0", 2, "", final=True, seq=7))
    assert harness.session.retain_from() is None


async def test_turn_finished_by_a_previous_replica_is_not_spoken_again(harness: Harness):
    await harness.session.on_control(AudioDone(turn_id="alex-0", npc="grom", frames=40))
    await harness.session.on_message(reply("alex-0", 0, "Replayed.", final=True))
    assert not harness.publisher.sent


async def test_failing_provider_falls_back_to_espeak():
    h = await Harness(ScriptedProvider(fail=RuntimeError("model crashed"))).start()
    try:
        await h.session.on_message(reply("alex-0", 0, "Still spoken.", final=True))
        (done,) = h.done_events()
        assert done.frames > 25 and not done.cancelled  # espeak said it
    finally:
        h.close()


async def test_idle_turn_is_closed_on_tick():
    h = await Harness(turn_idle_timeout_s=0.05).start()
    try:
        await h.session.on_message(reply("alex-0", 0, "Then the brain died.", seq=3))
        await h.session.on_tick()
        assert not h.done_events()
        await asyncio.sleep(0.1)
        await h.session.on_tick()
        (done,) = h.done_events()
        assert done.cancelled and done.frames > 0 and h.session.retain_from() is None
    finally:
        h.close()


async def test_close_ends_open_turns(harness: Harness):
    await harness.session.on_message(reply("alex-0", 0, "Unfinished.", seq=3))
    await harness.session.close()
    (done,) = harness.done_events()
    assert done.cancelled


class RefusingPublisher(CollectingPublisher):
    """An outbox given up (the session is being served again): every publish raises."""

    refusing = False

    async def publish(self, subject: str, data: bytes, msg_id: str,
                      headers: dict[str, str] | None = None) -> None:
        if self.refusing:
            raise PublishError("this serving of the session was given up")
        await super().publish(subject, data, msg_id, headers)


async def test_close_of_a_serving_given_up_stops_every_turn_though_it_cannot_say_so():
    publisher = RefusingPublisher()
    h = await Harness(ScriptedProvider(chunks=50, chunk_s=0.1, delay_s=0.02),
                      publisher=publisher).start()
    try:
        await h.session.on_message(reply("alex-0", 0, "Unfinished.", seq=3))
        speaking = asyncio.create_task(h.session.on_message(reply("brook-0", 0, "Long.", seq=4)))
        await until(lambda: any(f.headers[H.TURN] == "brook-0" for f in publisher.frames()))
        publisher.refusing = True
        with pytest.raises(PublishError):
            await h.session.close()
        assert speaking.done()  # the synthesis was stopped, not left publishing
        (ended,) = await asyncio.gather(speaking, return_exceptions=True)
        assert isinstance(ended, PublishError)  # its usage could not be said either
        assert h.session.retain_from() is None and not h.done_events()
    finally:
        h.close()


async def test_a_reply_that_waited_too_long_is_not_spoken():
    """tts was paused (SIGSTOP) or overloaded: a turn whose chunks were written long ago
    ends as stale, saying why, instead of playing into a conversation that moved on."""
    h = await Harness(stale_after_s=8).start()
    try:
        long_ago = time.time_ns() - 20 * 10**9
        await h.session.on_message(reply("alex-0", 0, "Stale words.", seq=3, published_ns=long_ago))
        await h.session.on_message(reply("alex-0", 1, "", final=True, seq=4, published_ns=long_ago))
        assert not h.publisher.frames()
        (done,) = h.done_events()
        assert done.cancelled and done.frames == 0
        assert done.reason.startswith("stale: its audio would start 20.")
        assert "after npc-brain wrote it" in done.reason
        await h.session.on_message(reply("bo-1", 0, "Fresh words.", seq=5,
                                         published_ns=time.time_ns()))
        assert h.publisher.frames()  # the next turn is spoken
    finally:
        h.close()


async def test_a_long_reply_may_wait_as_long_as_its_audio_already_sent():
    """The later sentences of a long reply wait behind the audio of the first: that is not
    stale."""
    h = await Harness(ScriptedProvider(chunks=1, chunk_s=6.0), stale_after_s=2).start()
    try:
        now = time.time_ns()
        await h.session.on_message(reply("alex-0", 0, "First.", seq=3, published_ns=now))
        sent = len(h.publisher.frames())
        assert sent == 300
        await h.session.on_message(reply("alex-0", 1, "Second.", seq=4,
                                         published_ns=now - 5 * 10**9))
        assert len(h.publisher.frames()) == 600 and not h.done_events()
    finally:
        h.close()


async def test_session_stop_silences_the_turn_being_spoken_and_drops_the_rest():
    provider = ScriptedProvider(chunks=50, chunk_s=0.1, delay_s=0.05)
    h = await Harness(provider).start()
    try:
        speaking = asyncio.create_task(h.session.on_message(reply("alex-0", 0, "Long.", seq=4)))
        await until(lambda: len(h.publisher.frames()) >= 10)
        h.session._ctx.stopped = SessionStopped(reason="gm")  # as serve_session sets it
        await h.session.on_control(h.session._ctx.stopped)
        await asyncio.wait_for(speaking, timeout=1)
        (done,) = h.done_events()
        assert done.cancelled and done.reason == "session ended"
        published = len(h.publisher.frames())
        await h.session.on_message(reply("bo-1", 0, "Too late.", seq=5))
        assert len(h.publisher.frames()) == published
        assert [d.reason for d in h.done_events()] == ["session ended", "session ended"]
    finally:
        h.close()


async def test_a_reply_to_a_line_long_gone_is_not_spoken():
    """The line waited out a broker outage: the reply is fresh, the line it answers is not."""
    h = await Harness(line_stale_after_s=30).start()
    try:
        now = time.time_ns()
        await h.session.on_message(reply("alex-0", 0, "Late words.", seq=3, published_ns=now,
                                         speech_end_ns=now - 60 * 10**9))
        (done,) = h.done_events()
        assert done.cancelled and not h.publisher.frames()
        assert "after the line it answers ended" in done.reason
    finally:
        h.close()


async def test_a_tts_paused_mid_synthesis_does_not_play_on_late():
    """SIGSTOP while synthesizing (here: a synthesis that stalls well past the bound): what
    comes out after it is not published, and the turn ends as stale."""
    h = await Harness(ScriptedProvider(chunks=2, chunk_s=0.1, delay_s=0.6),
                      stale_after_s=0.5).start()
    try:
        await h.session.on_message(reply("alex-0", 0, "Paused words.", seq=3,
                                         published_ns=time.time_ns()))
        (done,) = h.done_events()
        assert done.cancelled and done.reason.startswith("stale: its audio would start")
        assert len(h.publisher.frames()) == done.frames < 10
        await h.session.on_message(reply("alex-0", 1, "", final=True, seq=4))
        assert len(h.done_events()) == 1
    finally:
        h.close()


class WirePublisher(CollectingPublisher):
    """As nats.py publishes: into the connection's buffer, without giving the loop up; every
    session's publishes in one list, in the order they went out."""

    def __init__(self, wire: list[Sent]):
        super().__init__()
        self.wire = wire

    async def publish(self, subject: str, data: bytes, msg_id: str,
                      headers: dict[str, str] | None = None) -> None:
        sent = Sent(subject, data, msg_id, dict(headers or {}))
        self.sent.append(sent)
        self.wire.append(sent)


async def test_a_first_frame_goes_out_before_another_sessions_burst_ends():
    """Two sessions in one tts process: one reply is sounding, a long sentence whose frames
    are made far faster than they play; the other session's reply arrives meanwhile and its
    first frame goes out after a few of the first one's frames, not after all of them."""
    wire: list[Sent] = []
    long_one = await Harness(publisher=WirePublisher(wire),
                             frames_per_message=BATCHED_FRAMES).start()
    other = await Harness(publisher=WirePublisher(wire), frames_per_message=BATCHED_FRAMES).start()
    try:
        await asyncio.gather(  # the long one is first in the loop's queue
            long_one.session.on_message(
                reply("alex-0", 0, "Aye, the road north is long and the bridge is out. " * 6)),
            other.session.on_message(reply("bo-0", 0, "Yes.")))
        out = [s.msg_id.split(":")[2] for s in wire if ".audio.out." in s.subject
               for _ in range(int(s.headers.get("Glx-Frames", "1")))]  # one item a frame
        assert out.count("alex-0") > 300
        before = out.index("bo-0")
        assert before <= 2 * BATCHED_FRAMES, (
            f"{before} frames of the other reply went out before this one's first")
    finally:
        long_one.close()
        other.close()


async def sounding_at_once(wire: list[Sent], count: Callable[[], int],
                           **settings: object) -> list[int]:
    """Three sessions of one process, sharing its pump, each speaking a long reply at once
    onto ``wire``: ``count()`` at every turn of the event loop meanwhile."""
    pump = asyncio.Lock()
    sessions = [await Harness(publisher=WirePublisher(wire), pump=pump, **settings).start()
                for _ in range(3)]
    per_turn: list[int] = []

    async def count_turns() -> None:
        while True:
            per_turn.append(count())
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    try:
        await asyncio.gather(*(h.session.on_message(
            reply(f"alex-{n}", 0, "Aye, the road north is long and the bridge is out. " * 2))
            for n, h in enumerate(sessions)))
    finally:
        counter.cancel()
        for h in sessions:
            h.close()
    return per_turn


async def test_sounding_replies_take_turns_one_message_per_turn_of_the_loop():
    """Three sessions' replies sounding at once in one process share its pump: each turn of
    the event loop sees at most one of their messages, so whatever else is ready (a new
    reply's sentence read from the socket, its first frame) waits for one, not three."""
    wire: list[Sent] = []
    per_turn = await sounding_at_once(wire, lambda: len(wire))
    steps = np.diff(per_turn)
    assert len(wire) > 3 * 150 and len(per_turn) > len(wire)
    # apart from the turn the three first frames went out in (at once, past the pump)
    assert np.count_nonzero(steps > 1) <= 1, f"{np.bincount(steps)} (messages a turn)"
    firsts = [i for i, s in enumerate(wire) if ".audio.out." in s.subject and s.headers["Glx-Seq"] == "0"]
    assert max(firsts) < 6  # every reply's first frame came before the others' bursts


async def test_with_batches_a_turn_of_the_loop_encodes_one_frame_not_a_batch(monkeypatch):
    """With ``TTS_FRAMES_PER_MESSAGE=10`` the pump still hands out one frame at a time: a
    batch is encoded over ten turns of the loop and published by the turn that fills it, so
    a new reply's first frame waits for one encode, not ten."""
    from glyphoxa_tts import frames as tts_frames

    encodes = 0
    real = tts_frames.FrameEncoder._encode

    def counting(self, mono):  # type: ignore[no-untyped-def]
        nonlocal encodes
        encodes += 1
        return real(self, mono)

    monkeypatch.setattr(tts_frames.FrameEncoder, "_encode", counting)
    wire: list[Sent] = []
    per_turn = await sounding_at_once(wire, lambda: encodes, frames_per_message=BATCHED_FRAMES)
    steps = np.diff(per_turn)
    assert encodes > 3 * 150 and len(wire) < encodes / 5  # in batches
    # apart from the turn the three first frames were encoded in (at once, past the pump)
    assert np.count_nonzero(steps > 1) <= 1, f"{np.bincount(steps)} (encodes a turn)"


async def test_by_default_every_frame_is_a_message_of_its_own():
    """``TTS_FRAMES_PER_MESSAGE`` is 1 unless set (ADR 0010): no ``Glx-Frames`` header."""
    h = await Harness().start()
    try:
        await h.session.on_message(reply("alex-0", 0, "Welcome, traveller.", final=True))
        messages = h.publisher.messages()
        assert len(messages) == len(h.publisher.frames()) > 20
        assert not any("Glx-Frames" in m.headers for m in messages)
        assert [m.msg_id for m in messages] == [f"aout:t1.s1:alex-0:{i}" for i in range(len(messages))]
    finally:
        h.close()
