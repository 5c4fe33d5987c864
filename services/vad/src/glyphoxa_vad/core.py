"""Every speaker of one session: opus frames in, utterances out (no NATS).

``SessionVad`` decodes each speaker's opus straight to 16 kHz mono, runs that speaker's
``SpeakerSegmenter`` and reports bad input as ``Rejection`` outputs (the session goes on):
a frame whose sequence number or capture time is not believable (``plausible``) is rejected
before it can change anything.
It also answers which input it still needs (``retain_from``) so that a replica taking over
replays exactly the unfinished talk spurts.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from glyphoxa_audio.opus import MAX_PACKET_BYTES, OpusDecoder, OpusError
from glyphoxa_vad import metrics
from glyphoxa_vad.engines import SAMPLE_RATE, VadEngine
from glyphoxa_vad.plausible import MAX_AHEAD_NS, SpeakerTimeline
from glyphoxa_vad.segmenter import Output, SegmenterConfig, SpeakerSegmenter, TurnCheck

MAX_COMPLETED_SPURTS = 4096


@dataclass(frozen=True)
class AudioFrame:
    """One ``audio.in`` message, already checked at the boundary."""

    speaker: str
    seq: int
    capture_ns: int
    stream_seq: int
    packet: bytes


@dataclass(frozen=True)
class Rejection:
    reason: str  # bounded: corrupt_opus | oversized | out_of_order | implausible_seq | ...
    detail: str
    speaker: str | None = None


@dataclass
class _Speaker:
    segmenter: SpeakerSegmenter
    timeline: SpeakerTimeline
    decoder: OpusDecoder | None = None
    arrived_mono: int = 0
    """When the speaker's last frame was taken (monotonic clock)."""


def new_decoder() -> OpusDecoder:
    return OpusDecoder(SAMPLE_RATE, 1)


@dataclass
class SessionVad:
    config: SegmenterConfig
    engine: VadEngine
    max_speakers: int = 32
    monotonic_ns: Callable[[], int] = time.monotonic_ns
    wall_ns: Callable[[], int] = time.time_ns
    decoder_factory: Callable[[], OpusDecoder] = new_decoder
    _speakers: dict[str, _Speaker] = field(default_factory=dict, init=False)
    _completed: deque[tuple[int, int]] = field(
        default_factory=lambda: deque(maxlen=MAX_COMPLETED_SPURTS), init=False)
    _latest_ns: int | None = field(default=None, init=False)
    _latest_mono: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._frames_counter = metrics.FRAMES.labels(engine=self.engine.name)

    # --- input -----------------------------------------------------------------------------

    def push(self, frame: AudioFrame) -> list[Output | Rejection]:
        if not frame.packet:
            return [Rejection("corrupt_opus", "empty opus packet", frame.speaker)]
        if len(frame.packet) > MAX_PACKET_BYTES:
            return [Rejection("oversized", f"opus packet of {len(frame.packet)} bytes", frame.speaker)]
        known = self._speakers.get(frame.speaker)
        timeline = known.timeline if known is not None else SpeakerTimeline()
        reference = self.reference_ns()
        verdict = timeline.judge(frame.seq, frame.capture_ns, reference)
        if verdict.reason is not None:
            return [Rejection(verdict.reason, verdict.detail, frame.speaker)]
        speaker = known or self._speaker(frame.speaker, timeline)
        if speaker is None:
            return [Rejection("too_many_speakers", f"more than {self.max_speakers} speakers",
                              frame.speaker)]
        seg = speaker.segmenter
        out: list[Output | Rejection] = [*seg.finish("gap")] if verdict.resync else []
        out += seg.before_frame(frame.capture_ns)
        if not seg.in_spurt or speaker.decoder is None:
            speaker.decoder = self.decoder_factory()  # a spurt decodes from a fresh state
        started = time.perf_counter()
        try:
            pcm = speaker.decoder.decode(frame.packet)
        except OpusError as exc:
            self._collect(seg)
            return [*out, Rejection("corrupt_opus", str(exc), frame.speaker)]
        metrics.DECODE_SECONDS.observe(time.perf_counter() - started)
        self._frames_counter.inc()
        timeline.take(frame.seq, frame.capture_ns)
        speaker.arrived_mono = self.monotonic_ns()
        # one frame moves the session's clock at most MAX_AHEAD_NS past where it was
        self._advance_clock(min(frame.capture_ns, reference + MAX_AHEAD_NS))
        out += seg.push(pcm, frame.seq, frame.capture_ns, frame.stream_seq)
        self._collect(seg)
        return out

    def tick(self) -> list[Output]:
        """Idle ends: a speaker who sent nothing for ``min_silence`` of the session clock.
        A speaker whose frames are still arriving is left to them: another speaker's clock,
        however far ahead, ends nobody who is talking."""
        now = self.capture_now()
        if now is None:
            return []
        out: list[Output] = []
        arriving_since = self.monotonic_ns() - self.config.stall_ms * 1_000_000
        for speaker in self._speakers.values():
            if speaker.arrived_mono > arriving_since:
                continue
            out += speaker.segmenter.tick(now)
            self._collect(speaker.segmenter)
        return out

    @property
    def timing(self) -> bool:
        """A speaker's spurt is open: ``tick`` has silences to time."""
        return any(s.segmenter.in_spurt for s in self._speakers.values())

    def turn_result(self, check: TurnCheck, probability: float) -> list[Output]:
        """The end-of-turn model's answer to a ``TurnCheck`` this session returned (the
        speaker's input waits for it: answer before pushing that speaker's next frame)."""
        speaker = self._speakers.get(check.speaker)
        if speaker is None or speaker.segmenter.asking is not check:
            metrics.TURN_CHECKS.labels(result="stale").inc()
            return []
        finished = probability >= self.config.turn_threshold
        metrics.TURN_CHECKS.labels(result="finished" if finished else "unfinished").inc()
        out = speaker.segmenter.turn_result(check, probability)
        self._collect(speaker.segmenter)
        return out

    def finish(self) -> list[Output]:
        """The session is over: end every open utterance."""
        out: list[Output] = []
        for speaker in self._speakers.values():
            out += speaker.segmenter.finish("stopped")
            self._collect(speaker.segmenter)
        return out

    def capture_now(self) -> int | None:
        """The session's capture clock: the newest frame's capture time, advanced by the wall
        time since that frame arrived (so a frame arriving on time has capture time "now").
        Live, the idle timer thus runs on wall time since the speaker's last frame; in a fast
        replay it follows the replayed timeline and ends nothing early."""
        if self._latest_ns is None:
            return None
        return self._latest_ns + (self.monotonic_ns() - self._latest_mono)

    def reference_ns(self) -> int:
        """What a frame's capture time is judged against: the session's capture clock, or
        wall time if that is later (so a frame may not run far ahead of either)."""
        now = self.capture_now()
        wall = self.wall_ns()
        return wall if now is None else max(now, wall)

    def _advance_clock(self, capture_ns: int) -> None:
        now = self.capture_now()
        if now is None or capture_ns >= now:
            self._latest_ns, self._latest_mono = capture_ns, self.monotonic_ns()

    # --- replay ----------------------------------------------------------------------------

    def retain_from(self) -> int | None:
        """Lowest input stream sequence still needed: the first frame of every spurt that is
        unfinished, or that ended but has frames at or after that point (replaying those
        frames without their spurt's beginning would give different results)."""
        open_spurts = [s.segmenter.spurt_first for s in self._speakers.values()
                       if s.segmenter.spurt_first is not None]
        if not open_spurts:
            self._completed.clear()
            return None
        floor = min(open_spurts)  # type: ignore[type-var]
        moved = True
        while moved:
            moved = False
            for first, last in self._completed:
                if first < floor <= last:
                    floor, moved = first, True
        kept = [c for c in self._completed if c[1] >= floor]
        if len(kept) != len(self._completed):
            self._completed.clear()
            self._completed.extend(kept)
        return floor

    def _collect(self, seg: SpeakerSegmenter) -> None:
        self._completed.extend(seg.completed)
        seg.completed.clear()

    # --- speakers --------------------------------------------------------------------------

    def _speaker(self, name: str, timeline: SpeakerTimeline) -> _Speaker | None:
        if len(self._speakers) >= self.max_speakers and not self._evict_idle():
            return None
        speaker = _Speaker(SpeakerSegmenter(name, self.config, self.engine.stream()), timeline)
        self._speakers[name] = speaker
        return speaker

    def _evict_idle(self) -> bool:
        for name, speaker in self._speakers.items():
            if not speaker.segmenter.in_spurt:
                del self._speakers[name]
                return True
        return False

    @property
    def speakers(self) -> list[str]:
        return list(self._speakers)
