"""The edge's playback without Discord or NATS: frames and control events in, paced packets,
Flush and Played out. Time is a fake clock (exact deadlines) except in one real-time test."""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest

from glyphoxa_discord_edge.playback import (
    FRAME_NS,
    InvalidFrame,
    Playback,
    PlaybackConfig,
    heard_prefix,
)
from glyphoxa_events.models import (
    AudioDone,
    BargeIn,
    Event,
    Flush,
    NpcSpeak,
    Outcome,
    Played,
    TurnEnded,
)

pytestmark = pytest.mark.unit

SILENCE = b"\xf8\xff\xfe"
WALL0 = 1_700_000_000_000_000_000
MS = 1_000_000
TEXT = " ".join(f"w{i:03d}" for i in range(10))  # 49 characters, a word every 5


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


class FakeTime:
    """A monotonic clock that moves only when told; sleepers wake at exactly their deadline."""

    def __init__(self) -> None:
        self.now = 1_000 * MS
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._count = 0

    def monotonic_ns(self) -> int:
        return self.now

    def wall_ns(self) -> int:
        return WALL0 + self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._count += 1
        heapq.heappush(self._sleepers, (self.now + round(seconds * 1e9), self._count, future))
        await future

    async def advance(self, seconds: float) -> None:
        target = self.now + round(seconds * 1e9)
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            at, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, at)
            if not future.done():
                future.set_result(None)
            await settle()
        self.now = target
        await settle()


class Rig:
    """One Playback on a fake clock, recording what it sends and emits."""

    def __init__(self, **config: object) -> None:
        self.time = FakeTime()
        self.sent: list[tuple[int, bytes]] = []
        self.events: list[Event] = []
        self.speaking: list[tuple[str, bool, int]] = []
        self.failing_sends: set[int] = set()  # which send calls raise (0 = the first)
        self.emit_fails = False
        self._sends = 0
        self.playback = Playback(
            self, self.emit,
            speaking=lambda npc, on: self.speaking.append((npc, on, len(self.sent))),
            config=PlaybackConfig(**config),  # type: ignore[arg-type]
            clock=self.time.monotonic_ns, wall=self.time.wall_ns, sleep=self.time.sleep)

    def send(self, opus: bytes) -> None:
        self._sends += 1
        if self._sends - 1 in self.failing_sends:
            raise OSError("voice socket closed")
        self.sent.append((self.time.now, opus))

    def emit(self, event: Event) -> None:
        if self.emit_fails:
            raise RuntimeError("bus down")
        self.events.append(event)

    def feed(self, turn: str, seqs: range | list[int], npc: str = "grom",
             published_ns: int = 0) -> None:
        for seq in seqs:
            self.playback.feed_frame(npc, turn, seq, packet(turn, seq), published_ns)

    def audio(self) -> list[bytes]:
        return [b for _, b in self.sent if b != SILENCE]

    def played(self) -> list[Played]:
        return [e for e in self.events if isinstance(e, Played)]

    def flushes(self) -> list[Flush]:
        return [e for e in self.events if isinstance(e, Flush)]


def packet(turn: str, seq: int) -> bytes:
    return f"{turn}/{seq}".encode()


def turn_ended(turn: str, text: str = TEXT, npc: str = "grom",
               outcome: Outcome = Outcome.answered) -> TurnEnded:
    return TurnEnded(turn_id=turn, speaker="alice", transcript="hello", npc=npc,
                     outcome=outcome, reply_text=text)


def done(turn: str, frames: int, npc: str = "grom", cancelled: bool = False) -> AudioDone:
    return AudioDone(turn_id=turn, npc=npc, frames=frames, cancelled=cancelled)


BARGE_IN = BargeIn(speaker="alice", at_ns=1)


@pytest.fixture
async def make_rig() -> AsyncIterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(**config: object) -> Rig:
        rig = Rig(**config)
        rig.playback.start()
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.playback.close()


@pytest.fixture
async def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


# --- pacing ------------------------------------------------------------------------------


async def test_frames_go_out_at_exact_20ms_deadlines_then_five_silence_frames(rig: Rig):
    t0 = rig.time.now
    rig.feed("t1", range(10))
    rig.playback.on_control(done("t1", 10))
    await rig.time.advance(1.0)

    assert [b for _, b in rig.sent] == [packet("t1", n) for n in range(10)] + [SILENCE] * 5
    assert [at for at, _ in rig.sent] == [t0 + n * FRAME_NS for n in range(15)]


async def test_real_clock_pacing_has_small_jitter():
    sends: list[int] = []

    class Sink:
        def send(self, opus: bytes) -> None:
            sends.append(time.monotonic_ns())

    playback = Playback(Sink(), lambda event: None)
    playback.start()
    try:
        for seq in range(25):
            playback.feed_frame("grom", "t1", seq, packet("t1", seq))
        deadline = time.monotonic() + 3
        while len(sends) < 25 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await playback.close()

    assert len(sends) >= 25
    lateness_ms = sorted((at - sends[0] - n * FRAME_NS) / MS for n, at in enumerate(sends[:25]))
    assert lateness_ms[0] > -1, lateness_ms  # never early
    assert lateness_ms[12] < 3, lateness_ms  # typically within a few ms of its deadline
    assert lateness_ms[-1] < 20, lateness_ms  # a busy machine's hiccup is not carried on


async def test_a_burst_of_100_frames_is_absorbed_and_played_at_pace(rig: Rig):
    t0 = rig.time.now
    rig.feed("t1", range(100))  # all within one instant of fake time
    await rig.time.advance(0.5)
    assert len(rig.audio()) == 26  # t0 .. t0 + 500 ms

    await rig.time.advance(2.0)
    audio = [(at, b) for at, b in rig.sent if b != SILENCE]
    assert [b for _, b in audio] == [packet("t1", n) for n in range(100)]
    assert [at for at, _ in audio] == [t0 + n * FRAME_NS for n in range(100)]


async def test_bytes_sent_are_the_bytes_received(rig: Rig):
    rng = random.Random(5)
    frames = [rng.randbytes(rng.randint(1, 400)) for _ in range(30)]
    for seq, opus in enumerate(frames):
        rig.playback.feed_frame("grom", "t1", seq, opus)
    rig.playback.on_control(done("t1", 30))
    await rig.time.advance(1.0)
    assert [b for _, b in rig.sent][:30] == frames


# --- order -------------------------------------------------------------------------------


async def test_frames_of_a_turn_are_reordered_by_seq(rig: Rig):
    order = list(range(20))
    random.Random(3).shuffle(order)
    rig.playback.on_control(done("t1", 20))
    await rig.time.advance(0)
    rig.feed("t1", order)  # all arrive before the first tick
    await rig.time.advance(1.0)
    assert rig.audio() == [packet("t1", n) for n in range(20)]
    assert rig.playback.stats.skipped == 0


async def test_turns_play_whole_in_the_order_their_first_frame_arrived(rig: Rig):
    t0 = rig.time.now
    rig.feed("a", [0], npc="grom")
    rig.feed("b", [0, 1], npc="lyra")
    rig.feed("a", [1, 2], npc="grom")
    rig.feed("b", [2], npc="lyra")
    rig.playback.on_control(done("b", 3, npc="lyra"))
    rig.playback.on_control(done("a", 3))
    await rig.time.advance(1.0)

    assert [b for _, b in rig.sent] == (
        [packet("a", n) for n in range(3)] + [SILENCE] * 5
        + [packet("b", n) for n in range(3)] + [SILENCE] * 5)
    assert rig.sent[8][0] == t0 + 8 * FRAME_NS  # b starts right after a's silence
    assert rig.speaking == [("grom", True, 0), ("grom", False, 8),
                            ("lyra", True, 8), ("lyra", False, 16)]


async def test_duplicates_are_dropped_while_buffered_and_after_playing(rig: Rig):
    rig.feed("t1", range(5))
    rig.feed("t1", range(2, 5))  # redelivered while still buffered
    await rig.time.advance(0.2)
    rig.feed("t1", range(5))  # redelivered after they played
    rig.playback.on_control(done("t1", 5))
    await rig.time.advance(0.5)

    assert rig.audio() == [packet("t1", n) for n in range(5)]
    assert rig.playback.stats.duplicates == 3
    assert rig.playback.stats.late == 5


async def test_a_gap_is_skipped_after_the_jitter_window(rig: Rig):
    t0 = rig.time.now
    rig.feed("t1", [0, 1, 3, 4])
    rig.playback.on_control(done("t1", 5))
    rig.playback.on_control(turn_ended("t1"))
    await rig.time.advance(1.0)

    assert rig.audio() == [packet("t1", n) for n in (0, 1, 3, 4)]
    # frame 2 was due at t0+40 ms and awaited 60 ms (silence meanwhile): 3 goes at t0+100 ms
    assert [b for _, b in rig.sent[:6]] == [packet("t1", 0), packet("t1", 1)] + [SILENCE] * 3 + [
        packet("t1", 3)]
    assert rig.sent[5][0] == t0 + 100 * MS
    assert rig.playback.stats.skipped == 1
    assert rig.played() == [Played(turn_id="t1", npc="grom", text_heard=TEXT, complete=True,
                                   first_played_ns=WALL0 + t0)]


async def test_a_gap_filled_within_the_window_plays_in_order(rig: Rig):
    rig.feed("t1", [0, 1, 3, 4])
    await rig.time.advance(0.05)  # frame 2 missing since t0+40 ms
    rig.feed("t1", [2])
    await rig.time.advance(0.5)
    assert rig.audio() == [packet("t1", n) for n in range(5)]
    assert rig.playback.stats.skipped == 0


async def test_frames_missing_at_the_tail_are_given_up_after_the_tail_wait(make_rig):
    rig = make_rig(tail_wait_s=0.1)
    rig.feed("t1", range(3))
    rig.playback.on_control(done("t1", 6))
    rig.playback.on_control(turn_ended("t1"))
    await rig.time.advance(0.1)
    assert not rig.played()  # 3..5 may still be on their way
    await rig.time.advance(0.2)
    assert rig.playback.stats.skipped == 3
    assert rig.played()[0].complete


async def test_tts_behind_means_silence_then_resume_within_the_same_turn(rig: Rig):
    rig.feed("t1", range(2))
    await rig.time.advance(0.5)
    assert [b for _, b in rig.sent] == [packet("t1", 0), packet("t1", 1)] + [SILENCE] * 5
    assert rig.playback.audible == ("t1", "grom")  # still the turn players hear
    rig.feed("t1", range(2, 4))
    rig.playback.on_control(done("t1", 4))
    await rig.time.advance(0.5)
    assert rig.audio() == [packet("t1", n) for n in range(4)]
    assert rig.speaking == [("grom", True, 0), ("grom", False, 14)]


async def test_a_turn_longer_than_the_cap_drops_and_counts_the_excess(make_rig):
    rig = make_rig(max_turn_s=0.1)  # five frames
    rig.feed("t1", range(8))
    rig.playback.on_control(done("t1", 8))
    await rig.time.advance(1.0)
    assert rig.audio() == [packet("t1", n) for n in range(5)]
    assert rig.playback.stats.overflow == 3


async def test_a_turn_that_never_gets_its_audio_done_ends_after_the_stall_time(make_rig):
    rig = make_rig(stall_s=1.0, played_wait_s=0.5)
    rig.playback.on_control(turn_ended("a"))
    rig.feed("a", range(3))
    rig.feed("b", range(2), npc="lyra")  # waits behind a
    await rig.time.advance(0.9)
    assert rig.audio() == [packet("a", n) for n in range(3)]
    await rig.time.advance(0.5)
    assert rig.audio()[3:] == [packet("b", 0), packet("b", 1)]
    assert rig.played() == []  # AudioDone may still come and say how many frames there were
    await rig.time.advance(0.5)
    [played] = rig.played()
    assert (played.turn_id, played.complete, played.text_heard) == ("a", False, TEXT)


async def test_too_many_queued_turns_end_the_oldest_waiting_one(make_rig):
    rig = make_rig(max_turns=2)
    for turn in "abc":
        rig.feed(turn, range(2))
        rig.playback.on_control(done(turn, 2))
        await rig.time.advance(0)  # a starts playing at once
    await rig.time.advance(1.0)
    assert rig.audio() == [packet(t, n) for t in "ac" for n in range(2)]
    assert Played(turn_id="b", npc="grom", text_heard="", complete=False) in rig.played()
    assert rig.playback.stats.turns_dropped == 1


# --- barge-in and flush ----------------------------------------------------------------------


async def test_bargein_while_audible_stops_within_one_frame_and_flushes(rig: Rig):
    rig.playback.on_control(turn_ended("t1"))
    rig.playback.on_control(done("t1", 50))
    rig.feed("t1", range(50))
    await rig.time.advance(0.19)  # frames 0..9 are out
    assert len(rig.audio()) == 10

    rig.playback.on_control(BARGE_IN)
    assert rig.events == [
        Flush(turn_id="t1", npc="grom", reason="bargein"),
        Played(turn_id="t1", npc="grom", text_heard="w000 w001", complete=False,
               first_played_ns=rig.played()[0].first_played_ns),
    ]
    sent_before = len(rig.sent)
    await rig.time.advance(0.02)
    assert rig.sent[sent_before][1] == SILENCE  # the very next tick sends none of the turn
    rig.feed("t1", range(50, 60))  # stragglers of the flushed turn
    await rig.time.advance(1.0)
    assert len(rig.audio()) == 10
    assert [b for _, b in rig.sent[sent_before:]] == [SILENCE] * 5
    assert rig.playback.audible is None
    assert rig.playback.stats.bargeins == 1


async def test_bargein_played_waits_for_the_cancelled_turn_and_audio_done(rig: Rig):
    rig.feed("t1", range(30))
    await rig.time.advance(0.19)
    rig.playback.on_control(BARGE_IN)
    assert rig.flushes() and not rig.played()  # neither the text nor the frame count known

    rig.playback.on_control(turn_ended("t1", outcome=Outcome.cancelled))
    assert not rig.played()
    rig.playback.on_control(done("t1", 40, cancelled=True))  # tts made 40 before it stopped
    [played] = rig.played()
    assert (played.complete, played.text_heard) == (False, heard_prefix(TEXT, 10 / 40))
    assert played.text_heard == "w000 w001"


async def test_bargein_while_no_npc_is_audible_does_nothing(rig: Rig):
    rig.playback.on_control(BARGE_IN)  # nothing queued
    rig.feed("t1", range(3))
    rig.playback.on_control(BARGE_IN)  # queued, not yet audible (no tick has run)
    await rig.time.advance(0)
    assert len(rig.audio()) == 1  # the first tick ran once the loop got control
    rig.playback.on_control(done("t1", 3))
    rig.playback.on_control(turn_ended("t1"))
    await rig.time.advance(0.05)
    rig.playback.on_control(BARGE_IN)  # during the trailing silence
    await rig.time.advance(0.5)

    assert rig.flushes() == []
    assert rig.audio() == [packet("t1", n) for n in range(3)]
    assert [p.complete for p in rig.played()] == [True]
    assert rig.playback.stats.bargeins == 0


@pytest.mark.parametrize(
    ("flush", "stopped"),
    [
        (Flush(npc="grom", reason="muted by the game master"), {"a", "b"}),
        (Flush(turn_id="b", reason="muted by the game master"), {"b"}),
        (Flush(reason="muted by the game master"), {"a", "b", "c"}),
    ],
    ids=["npc", "turn", "all"],
)
async def test_an_external_flush_stops_what_it_names_without_flushing_again(
        rig: Rig, flush: Flush, stopped: set[str]):
    rig.feed("a", range(20), npc="grom")
    rig.feed("b", range(5), npc="grom")
    rig.feed("c", range(5), npc="lyra")
    for turn, npc, frames in (("a", "grom", 20), ("b", "grom", 5), ("c", "lyra", 5)):
        rig.playback.on_control(done(turn, frames, npc=npc))
        rig.playback.on_control(turn_ended(turn, npc=npc))
    await rig.time.advance(0.09)  # a: frames 0..4 out
    flush_sent = len(rig.sent)

    rig.playback.on_control(flush)
    await rig.time.advance(0.02)
    if "a" in stopped:
        assert rig.sent[flush_sent][1] == SILENCE
    await rig.time.advance(2.0)

    assert rig.flushes() == []
    played = {p.turn_id: p for p in rig.played()}
    assert set(played) == {"a", "b", "c"}  # every queued turn reports
    for turn in "abc":
        expected = [packet(turn, n) for n in range(20 if turn == "a" else 5)]
        heard = [b for b in rig.audio() if b.startswith(turn.encode())]
        assert heard == (expected[:5] if turn == "a" else []) if turn in stopped else expected
        assert played[turn].complete is (turn not in stopped)
    if "b" in stopped:
        assert played["b"] == Played(turn_id="b", npc="grom", text_heard="", complete=False)
    if "a" in stopped:
        assert played["a"].text_heard == heard_prefix(TEXT, 5 / 20) == "w000 w001"


async def test_an_npc_flush_drops_its_turns_published_before_it_arriving_later(rig: Rig):
    await rig.time.advance(0.1)
    flushed_at = rig.time.wall_ns()
    rig.playback.on_control(Flush(npc="grom", reason="muted by the game master"))
    rig.feed("old", range(3), published_ns=flushed_at - 5 * MS)  # in flight at the flush
    rig.feed("new", range(3), published_ns=flushed_at + 5 * MS)
    await rig.time.advance(1.0)
    assert rig.audio() == [packet("new", n) for n in range(3)]


async def test_a_cancelled_audio_done_stops_the_turn_without_a_flush(rig: Rig):
    rig.playback.on_control(turn_ended("t1", outcome=Outcome.cancelled))
    rig.feed("t1", range(20))
    await rig.time.advance(0.09)
    sent = len(rig.sent)
    rig.playback.on_control(done("t1", 20, cancelled=True))
    await rig.time.advance(1.0)

    assert [b for _, b in rig.sent[sent:]] == [SILENCE] * 5
    assert rig.flushes() == []
    [played] = rig.played()
    assert (played.complete, played.text_heard) == (False, "w000 w001")
    assert rig.playback.stats.flushed == 1


async def test_a_turn_cancelled_before_its_frames_arrive_is_never_played(rig: Rig):
    rig.playback.on_control(done("t1", 4, cancelled=True))
    rig.feed("t1", range(4))
    await rig.time.advance(0.5)
    assert rig.sent == [] and rig.events == []


# --- played ------------------------------------------------------------------------------


async def test_a_whole_turn_reports_complete_with_the_reply_text(rig: Rig):
    t0 = rig.time.now
    rig.feed("t1", range(10))
    rig.playback.on_control(turn_ended("t1", text="Welcome, traveller."))
    rig.playback.on_control(done("t1", 10))
    await rig.time.advance(0.15)
    assert rig.played() == []  # still playing
    await rig.time.advance(0.1)
    assert rig.events == [Played(turn_id="t1", npc="grom", text_heard="Welcome, traveller.",
                                 complete=True, first_played_ns=WALL0 + t0)]


async def test_a_gm_line_reports_its_spoken_text(rig: Rig):
    rig.playback.on_control(NpcSpeak(npc="grom", text="Halt!", request_id="gm-1"))
    rig.feed("gm-1", range(3))
    rig.playback.on_control(done("gm-1", 3))
    await rig.time.advance(0.2)
    assert [(p.turn_id, p.text_heard, p.complete) for p in rig.played()] == [
        ("gm-1", "Halt!", True)]


async def test_played_waits_for_a_late_turn_ended(rig: Rig):
    rig.feed("t1", range(3))
    rig.playback.on_control(done("t1", 3))
    await rig.time.advance(0.5)
    assert rig.played() == []
    rig.playback.on_control(turn_ended("t1"))
    assert [(p.text_heard, p.complete) for p in rig.played()] == [(TEXT, True)]


async def test_played_goes_out_with_what_is_known_when_turn_ended_never_comes(make_rig):
    rig = make_rig(played_wait_s=0.5)
    rig.feed("t1", range(3))
    rig.playback.on_control(done("t1", 3))
    await rig.time.advance(0.4)
    assert rig.played() == []
    await rig.time.advance(0.3)
    assert [(p.text_heard, p.complete) for p in rig.played()] == [("", True)]
    rig.playback.on_control(turn_ended("t1"))  # too late: one Played per turn
    assert len(rig.played()) == 1


def test_heard_prefix_is_proportional_and_cut_back_to_a_word():
    assert heard_prefix(TEXT, 1.0) == TEXT
    assert heard_prefix(TEXT, 0.0) == ""
    assert heard_prefix(TEXT, 0.2) == "w000 w001"  # ends on a space
    assert heard_prefix(TEXT, 0.23) == "w000 w001"  # inside w002: back to its start
    assert heard_prefix("Unbelievable", 0.5) == ""
    assert heard_prefix("Hello there.  Friend", 0.7) == "Hello there."


# --- boundaries and lifecycle --------------------------------------------------------------


async def test_ids_that_may_not_appear_in_events_are_rejected(rig: Rig):
    with pytest.raises(InvalidFrame):
        rig.playback.feed_frame("Grom.*", "t1", 0, b"x")
    with pytest.raises(InvalidFrame):
        rig.playback.feed_frame("grom", "T 1", 0, b"x")
    with pytest.raises(InvalidFrame):
        rig.playback.feed_frame("grom", "t1", -1, b"x")
    assert rig.playback.stats.frames_sent == 0


async def test_close_stops_the_task_and_reports_the_turn_in_progress(rig: Rig):
    rig.playback.on_control(turn_ended("t1"))
    rig.playback.on_control(done("t1", 40))
    rig.feed("t1", range(40))
    await rig.time.advance(0.09)
    await rig.playback.close()
    await rig.playback.close()  # idempotent

    [played] = rig.played()
    assert (played.complete, played.text_heard) == (False, heard_prefix(TEXT, 5 / 40))
    assert rig.speaking == [("grom", True, 0), ("grom", False, 5)]
    rig.feed("t2", range(3))  # ignored once closed
    await rig.time.advance(0.5)
    assert len(rig.sent) == 5


async def test_a_failing_sink_or_emit_does_not_stop_playback(rig: Rig):
    rig.failing_sends = {1}
    rig.emit_fails = True
    rig.feed("t1", range(4))
    rig.playback.on_control(done("t1", 4))
    rig.playback.on_control(turn_ended("t1"))
    await rig.time.advance(0.5)
    assert rig.audio() == [packet("t1", n) for n in (0, 2, 3)]
    assert rig.playback.stats.sink_errors == 1
    assert rig.played() == []  # emitted into a failing bus, logged
