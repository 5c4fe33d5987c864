"""Forged or broken ``Glx-Seq`` and ``Glx-Capture-Ns`` values: rejected and counted, and
neither the speaker nor anyone else in the session goes deaf (issue 13, item 4). Frames are
numbered as edges number them: ``Glx-Seq`` = capture time in 20 ms frames."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, Counter

from glyphoxa_bus.session import InputMessage, SessionContext
from glyphoxa_events import headers as H
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_vad.core import AudioFrame, Rejection, SessionVad
from glyphoxa_vad.handler import VadSessionHandler
from glyphoxa_vad.segmenter import Output
from tests.unit.vad.vad_feed import (
    FRAME_NS,
    EnergyEngine,
    FakeClock,
    default_config,
    discord_packets,
    track,
    utterances,
)

pytestmark = pytest.mark.unit

S = 1_000_000_000
HOUR = 3600 * S


def line(speaker: str, at_ns: int, ms: int = 900) -> list[AudioFrame]:
    """A burst of speech as an edge publishes it (Discord-style frames, 20 ms each)."""
    packets = discord_packets(track([("tone", ms), ("silence", 300)]))
    return [AudioFrame(speaker, (at_ns + p.index * FRAME_NS) // FRAME_NS, at_ns + p.index * FRAME_NS,
                       0, p.data) for p in packets]


def forged(speaker: str, seq: int, capture_ns: int) -> AudioFrame:
    return AudioFrame(speaker, seq, capture_ns, 0, line(speaker, capture_ns)[0].packet)


class Live:
    """A session fed at ``speed`` times real time: the monotonic clock follows the honest
    frames' capture times (divided by ``speed``); the idle timer ticks before every frame."""

    def __init__(self, base_ns: int, speed: float = 1.0):
        self.base_ns, self.speed = base_ns, speed
        self.clock = FakeClock()
        self.vad = SessionVad(default_config(), EnergyEngine(), monotonic_ns=self.clock)
        self.out: list[Output | Rejection] = []
        self._stream_seq = 0

    def feed(self, frames: list[AudioFrame], honest: bool = True) -> list[Output | Rejection]:
        got: list[Output | Rejection] = []
        for f in frames:
            if honest:
                self.clock.ns = max(self.clock.ns, int((f.capture_ns - self.base_ns) / self.speed))
            got += self.vad.tick()
            self._stream_seq += 1
            got += self.vad.push(AudioFrame(f.speaker, f.seq, f.capture_ns, self._stream_seq, f.packet))
        self.out += got
        return got

    def end(self) -> list[Output | Rejection]:
        self.clock.ns += 5 * S
        self.out += self.vad.tick() + self.vad.finish()
        return self.out

    def rejections(self) -> list[str]:
        return [r.reason for r in self.out if isinstance(r, Rejection)]


def now_ns() -> int:
    return time.time_ns() // FRAME_NS * FRAME_NS


def test_a_sequence_number_far_ahead_is_rejected_and_the_speaker_is_still_heard() -> None:
    t0 = now_ns()
    session = Live(t0)
    first = line("robin", t0)
    session.feed(first[:10])
    session.feed([forged("robin", 2**62, first[10].capture_ns)], honest=False)
    session.feed(first[10:])
    session.feed(line("robin", t0 + 3 * S))
    utts = utterances(session.end())
    assert [u.speaker for u in utts] == ["robin", "robin"]
    assert [u.audio_ms >= 1000 for u in utts] == [True, True]
    assert session.rejections() == ["implausible_seq"]


def test_a_new_speaker_an_hour_ahead_is_rejected_and_the_others_go_on() -> None:
    t0 = now_ns()
    session = Live(t0)
    robin, drew = line("robin", t0), line("drew", t0 + 2 * S)
    session.feed(robin[:10])
    session.feed([forged("mallory", (t0 + HOUR) // FRAME_NS, t0 + HOUR)], honest=False)
    session.feed(robin[10:] + drew)
    utts = utterances(session.end())
    assert [(u.speaker, u.audio_ms >= 1000) for u in utts] == [("robin", True), ("drew", True)]
    assert session.rejections() == ["implausible_capture"]
    assert "mallory" not in session.vad.speakers


def test_a_capture_time_within_reach_does_not_cut_a_speaker_who_is_talking() -> None:
    """A frame 20 s ahead is not implausible on its own (a fast replay skips pauses), but the
    idle timer never ends the spurt of a speaker whose frames are still arriving."""
    t0 = now_ns()
    session = Live(t0)
    robin = line("robin", t0, ms=1500)
    session.feed(robin[:10])
    session.feed([forged("mallory", (t0 + 20 * S) // FRAME_NS, t0 + 20 * S)], honest=False)
    session.feed(robin[10:])
    utts = [u for u in utterances(session.end()) if u.speaker == "robin"]
    assert [(u.id, u.audio_ms >= 1600) for u in utts] == [(f"robin-{robin[0].seq}", True)]
    assert session.rejections() == []


def test_a_speaker_goes_on_after_a_forged_jump_of_sequence_and_capture_time() -> None:
    """A forged frame that jumps both by an hour, consistently: the speaker's next frames
    follow each other and not it, so after a few of them the speaker is heard again."""
    t0 = now_ns()
    session = Live(t0)
    first = line("robin", t0)
    session.feed(first)
    session.feed([forged("robin", first[-1].seq + HOUR // FRAME_NS, first[-1].capture_ns + HOUR)],
                 honest=False)
    second = line("robin", t0 + 3 * S, ms=1500)
    session.feed(second)
    utts = utterances(session.end())
    assert [u.speaker for u in utts] == ["robin", "robin"]
    assert utts[1].audio_ms >= 1400
    assert session.rejections() == ["out_of_order", "out_of_order"]


def test_a_capture_time_far_back_is_rejected() -> None:
    """(Numbered by a counter from 0 this time, as an edge may.)"""
    t0 = now_ns()
    session = Live(t0)
    robin = [AudioFrame(f.speaker, n, f.capture_ns, 0, f.packet)
             for n, f in enumerate(line("robin", t0))]
    session.feed(robin[:10])
    session.feed([forged("robin", 10, t0 - 10 * S)], honest=False)
    session.feed(robin[10:])
    (utt,) = utterances(session.end())
    assert utt.audio_ms == 1000  # the burst and the five silence frames, nothing more
    assert session.rejections() == ["implausible_capture"]


def test_a_fast_replay_with_long_pauses_is_heard_whole() -> None:
    """The scene player at 10x: capture times run ahead of wall time by 90% of the scene
    offset, and a pause of two minutes is skipped in 12 s."""
    t0 = now_ns()
    session = Live(t0, speed=10)
    session.feed(line("robin", t0))
    session.feed(line("drew", t0 + 20 * S))
    session.feed(line("robin", t0 + 140 * S))
    session.feed(line("drew", t0 + 143 * S))
    utts = utterances(session.end())
    assert [u.speaker for u in utts] == ["robin", "drew", "robin", "drew"]
    assert session.rejections() == []


async def test_the_handler_counts_implausible_frames_by_reason() -> None:
    rejected = Counter("test_rejected", "rejections", ["stage", "reason"], registry=CollectorRegistry())

    class Publisher:
        async def publish(self, *args: object, **kwargs: object) -> None:
            pass

    ctx = SessionContext("vad", SessionSubjects("t1", "s1"), nc=None, publisher=Publisher(),  # type: ignore[arg-type]
                         metrics_rejected=rejected)
    handler = VadSessionHandler(ctx, SessionVad(default_config(), EnergyEngine()))
    t0 = now_ns()
    frames = [*line("robin", t0)[:3], forged("robin", 2**62, t0 + 3 * FRAME_NS),
              forged("mallory", (t0 + HOUR) // FRAME_NS, t0 + HOUR)]
    for n, f in enumerate(frames):
        await handler.on_message(InputMessage(
            f"glx.t1.s1.audio.in.{f.speaker}", f.packet,
            {H.SEQ: str(f.seq), H.CAPTURE_NS: str(f.capture_ns), H.CODEC: H.CODEC_OPUS}, n + 1))
    counts = {s.labels["reason"]: s.value for m in rejected.collect() for s in m.samples
              if s.name.endswith("_total")}
    assert counts == {"implausible_seq": 1, "implausible_capture": 1}
