"""Is an ``audio.in`` frame believable? Checked before the frame can change any state.

``Glx-Seq`` and ``Glx-Capture-Ns`` come from an edge, or from anyone who can publish on the
subject. One bad frame must silence neither its speaker (a sequence number far ahead made
every later frame look old) nor the session (a capture time far ahead moved the session's
capture clock, and the idle timer then ended everyone's utterances). So:

- Frames are 20 ms (docs/contract.md) and are numbered no faster than they are captured:
  ``Glx-Seq`` may not run ahead of ``Glx-Capture-Ns`` counted in 20 ms frames (+
  ``SEQ_SLACK``). Edges number frames by capture time (``Glx-Seq`` = capture time in 20 ms
  frames, or one more than the last), so the numbers go on across rejoins and restarts; a
  counter from 0 passes too.
- A speaker's frame follows its previous one: a higher sequence number, a jump in it no
  larger than the capture time it skipped (+ slack), a capture time at most
  ``MAX_BEHIND_NS`` earlier.
- A capture time at most ``MAX_AHEAD_NS`` ahead of the session's clock (see
  ``SessionVad.reference_ns``), unless the speaker's own previous frame explains the jump by
  as many frames as it skipped: a fast replay (the scene player at ``--speed``) skips a long
  pause that way, and its capture times run ahead of wall time.
- ``RESYNC_FRAMES`` frames in a row that follow each other but not the speaker's previous
  frame mean that frame was the odd one (forged, or from an edge whose clock ran ahead) or
  the speaker's stream started again: the speaker goes on from the new frames.
"""

from __future__ import annotations

from dataclasses import dataclass

FRAME_NS = 20_000_000
SEQ_SLACK = 50
"""Frames a sequence number may run ahead of the capture time (1 s)."""
MAX_AHEAD_NS = 30_000_000_000
MAX_BEHIND_NS = 1_000_000_000
RESYNC_FRAMES = 3


@dataclass(frozen=True)
class Mark:
    """A frame's place on its speaker's timeline."""

    seq: int
    capture_ns: int


@dataclass(frozen=True)
class Verdict:
    reason: str | None = None
    """Why the frame is rejected (bounded: out_of_order | implausible_seq |
    implausible_capture); None: take it."""
    detail: str = ""
    resync: bool = False
    """Take it as the start of the speaker's new run of frames (end the old spurt first)."""


TAKE = Verdict()


def seq_runs_ahead(seq: int, capture_ns: int) -> bool:
    return seq > capture_ns // FRAME_NS + SEQ_SLACK


def why_not_after(prev: Mark, seq: int, capture_ns: int) -> Verdict | None:
    """Why a frame cannot come after ``prev`` on one speaker's timeline (None: it can)."""
    if seq <= prev.seq:
        return Verdict("out_of_order", f"seq {seq} after {prev.seq}")
    skipped_ns = capture_ns - prev.capture_ns
    if skipped_ns < -MAX_BEHIND_NS:
        return Verdict("implausible_capture",
                       f"capture time {-skipped_ns / 1e9:.1f} s before the speaker's last frame")
    if seq - prev.seq > max(0, skipped_ns) // FRAME_NS + SEQ_SLACK:
        return Verdict("implausible_seq",
                       f"seq jumps by {seq - prev.seq} in {max(0, skipped_ns) / 1e9:.1f} s")
    return None


def _skipped_as_many(prev: Mark, seq: int, capture_ns: int) -> bool:
    """Whether the sequence number skipped as many frames as the capture time did (as a
    fast replay skips a long pause)."""
    return capture_ns - prev.capture_ns <= (seq - prev.seq) * FRAME_NS + MAX_AHEAD_NS


class SpeakerTimeline:
    """Where a speaker's frames have got to; ``judge`` a frame, ``take`` it once decoded."""

    def __init__(self) -> None:
        self.last: Mark | None = None
        self._doubt: Mark | None = None  # the newest frame that did not follow ``last``
        self._doubts = 0

    def judge(self, seq: int, capture_ns: int, reference_ns: int) -> Verdict:
        """``reference_ns``: the session's clock, against which a capture time may be at
        most ``MAX_AHEAD_NS`` ahead."""
        if seq_runs_ahead(seq, capture_ns):
            return Verdict("implausible_seq", f"seq {seq} runs ahead of its capture time")
        last = self.last
        why = None if last is None else why_not_after(last, seq, capture_ns)
        explained = last is not None and why is None and _skipped_as_many(last, seq, capture_ns)
        if capture_ns - reference_ns > MAX_AHEAD_NS and not explained:
            return Verdict("implausible_capture", f"capture time "
                           f"{(capture_ns - reference_ns) / 1e9:.0f} s ahead of the session")
        if why is None:
            return TAKE
        doubt = self._doubt
        follows_doubt = doubt is not None and why_not_after(doubt, seq, capture_ns) is None
        self._doubts = self._doubts + 1 if follows_doubt else 1
        self._doubt = Mark(seq, capture_ns)
        return why if self._doubts < RESYNC_FRAMES else Verdict(resync=True)

    def take(self, seq: int, capture_ns: int) -> None:
        self.last = Mark(seq, capture_ns)
        self._doubt, self._doubts = None, 0
