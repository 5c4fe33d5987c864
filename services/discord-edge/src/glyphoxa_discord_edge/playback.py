"""NPC audio into one voice connection: reorder, pace at 20 ms, stop on barge-in, report.

A :class:`Playback` serves one session's voice connection. It knows nothing of Discord or
NATS: the session layer feeds it the frames of ``audio.out`` (:meth:`Playback.feed_frame`)
and the control events (:meth:`Playback.on_control`), gives it a :class:`FrameSink` that
sends a packet to the voice connection, and publishes what it emits (``Flush``, ``Played``).

- **Order.** A turn's frames play in ``seq`` order; turns play one after another in the
  order their first frame arrived, never interleaved. Duplicates (redeliveries) are dropped.
  A missing frame is waited for ``jitter_s`` while a later one is already here, then
  skipped (counted); frames missing at a turn's tail (``AudioDone`` says more exist) are
  waited for ``tail_wait_s``. Nothing is re-encoded: the bytes sent are the bytes received.
- **Pace.** One frame per 20 ms tick at absolute deadlines (``start + n * 20 ms``), so
  bursts from tts (faster than real time) are buffered, capped at ``max_turn_s`` per turn.
  After audio stops (turn over, flushed, or tts behind), up to five opus silence frames
  follow, as Discord expects; the next turn starts only after them.
- **Barge-in** (ADR 0003). A ``BargeIn`` while a turn is audible (a frame of it has been
  sent and it has not ended) ends that turn at once: the next tick sends none of it, and a
  ``Flush(turn_id, npc, reason="bargein")`` is emitted. A ``BargeIn`` while no NPC is
  audible does nothing. A ``Flush`` from elsewhere (the GM's mute) and a cancelled
  ``AudioDone`` stop the matching turns the same way but emit no ``Flush``.
- **Played.** Every turn that reached the edge ends in exactly one ``Played``. It is
  ``complete`` when playback reached the turn's end (frames lost in transit and skipped do
  not make it incomplete: a 20 ms hole hides no word); then ``text_heard`` is the
  ``TurnEnded.reply_text`` (or an ``NpcSpeak`` line's text). A turn cut short hears the
  prefix of that text proportional to frames reached / frames made (``AudioDone.frames``,
  else the highest ``seq`` seen + 1), cut back to a word boundary: an approximation that
  assumes speech time is spread evenly over the characters. A turn flushed before any frame
  played reports ``complete=False`` and empty text at once. Otherwise the ``Played`` waits
  for the text (and, when cut short, for ``AudioDone``) at most ``played_wait_s``, then
  goes out with what is known, so it is never lost; :meth:`Playback.close` emits every
  pending one.

Pacing runs in asyncio (:meth:`Playback.run`). :meth:`Playback.tick` is the whole of one
20 ms step and is synchronous, so a dedicated-thread driver can call it instead (holding a
lock that :meth:`feed_frame` and :meth:`on_control` also take; the callbacks then run on
that thread and must hand their work to the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import TypeAdapter, ValidationError

from glyphoxa_audio.opus import SILENCE_FRAME
from glyphoxa_events.models import (
    AudioDone,
    BargeIn,
    Event,
    Flush,
    Id,
    NpcSpeak,
    Played,
    TurnEnded,
)
from glyphoxa_events.tokens import InvalidToken, validate_token
from glyphoxa_runtime import tracing
from glyphoxa_runtime.recent import Recent

log = logging.getLogger("glyphoxa.discord_edge.playback")

FRAME_NS = 20_000_000
_TURN_ID = TypeAdapter(Id)


class FrameSink(Protocol):
    """Where paced opus packets go (production: ``VoiceClient.send_audio_packet(data,
    encode=False)``). Called from the pacing loop only; it must not block."""

    def send(self, opus: bytes) -> None: ...


Emit = Callable[[Event], None]
"""Receives the ``Flush`` and ``Played`` events to publish; must not block."""
Speaking = Callable[[str, bool], None]
"""``(npc, on)``: on before a turn's first frame, off after its trailing silence."""


class InvalidFrame(ValueError):
    """A frame whose ids may not appear in an event (the adapter should TERM it)."""


@dataclass(frozen=True, slots=True)
class PlaybackConfig:
    jitter_s: float = 0.060  # a missing frame is waited for this long while later ones wait
    tail_wait_s: float = 1.0  # frames missing at a turn's tail (AudioDone counts more)
    max_turn_s: float = 300.0  # a turn's frames beyond this are dropped (bounds the buffer)
    max_turns: int = 16  # turns queued at once; more ends the oldest one not yet playing
    silence_frames: int = 5  # opus silence frames after audio stops
    played_wait_s: float = 5.0  # longest wait for a turn's text before Played goes out
    stall_s: float = 30.0  # a turn with nothing to play and no AudioDone ends after this
    resync_s: float = 0.100  # further behind schedule: restart it rather than burst

    def __post_init__(self) -> None:
        if self.max_turns < 2 or self.silence_frames < 0 or self.jitter_s < 0:
            raise ValueError("max_turns >= 2, silence_frames >= 0 and jitter_s >= 0 needed")


@dataclass(slots=True)
class PlaybackStats:
    """Counters for the session layer's metrics."""

    frames_sent: int = 0
    silence_sent: int = 0
    duplicates: int = 0  # a frame already buffered
    late: int = 0  # its turn had ended, or its place in the turn had passed
    skipped: int = 0  # missing frames given up on
    overflow: int = 0  # beyond max_turn_s
    turns_dropped: int = 0  # queued turns ended unplayed because max_turns were waiting
    flushed: int = 0  # turns stopped by a Flush or a cancelled AudioDone
    bargeins: int = 0  # turns stopped by a player talking over them
    sink_errors: int = 0
    resyncs: int = 0


@dataclass(slots=True)
class _Turn:
    turn_id: str
    npc: str
    last_activity: int  # monotonic ns of the newest frame in or out
    frames: dict[int, bytes] = field(default_factory=dict)
    next_seq: int = 0  # frames before it were played or skipped
    highest: int = -1
    sent: int = 0
    first_played_ns: int = 0
    missing_since: int | None = None  # monotonic ns: waiting for frame next_seq since
    trace: Mapping[str, str] = field(default_factory=dict)  # of its first frame (tts)


@dataclass(slots=True)
class _Ending:
    turn: _Turn
    complete: bool
    deadline: int


def heard_prefix(text: str, fraction: float) -> str:
    """The first ``fraction`` of ``text`` by characters, cut back to a word boundary."""
    if fraction >= 1:
        return text
    cut = int(len(text) * max(fraction, 0.0))
    if cut < len(text) and not text[cut].isspace():
        while cut > 0 and not text[cut - 1].isspace():
            cut -= 1
    return text[:cut].rstrip()


class Playback:
    def __init__(self, sink: FrameSink, emit: Emit, *, speaking: Speaking | None = None,
                 config: PlaybackConfig | None = None,
                 clock: Callable[[], int] = time.monotonic_ns,
                 wall: Callable[[], int] = time.time_ns,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 log_extra: Mapping[str, object] | None = None):
        self._sink, self._emit_to, self._speaking_cb = sink, emit, speaking
        self._config = config or PlaybackConfig()
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._log_extra = dict(log_extra or {})
        self.stats = PlaybackStats()
        c = self._config
        self._jitter_ns, self._tail_ns = int(c.jitter_s * 1e9), int(c.tail_wait_s * 1e9)
        self._stall_ns, self._resync_ns = int(c.stall_s * 1e9), int(c.resync_s * 1e9)
        self._max_frames = int(c.max_turn_s * 1e9) // FRAME_NS
        self._turns: OrderedDict[str, _Turn] = OrderedDict()  # arrival order; first plays
        self._finished: Recent[str, None] = Recent(1024)  # their frames are dropped
        self._texts: Recent[str, str] = Recent(1024)  # turn id -> reply text
        self._done: Recent[str, AudioDone] = Recent(1024)
        self._flushed_at: Recent[str, int] = Recent(256)  # npc or "*" -> wall ns of a Flush
        self._pending: list[_Ending] = []  # ended turns whose Played waits for facts
        self._silence_owed = 0
        self._after_turn = False  # a turn's audio ended: the next waits for the silence
        self._speaking: _Turn | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    # --- input --------------------------------------------------------------------------

    def feed_frame(self, npc: str, turn_id: str, seq: int, opus: bytes,
                   published_ns: int = 0, trace: Mapping[str, str] | None = None) -> None:
        """One ``audio.out`` frame, in any order, possibly again; raises InvalidFrame.
        ``trace``: its trace headers, continued by the turn's playback span."""
        if self._closed:
            return
        if seq < 0 or not opus:
            raise InvalidFrame(f"frame {seq} of {turn_id[:130]!r}: negative seq or no bytes")
        turn = self._turns.get(turn_id) or self._new_turn(npc, turn_id, published_ns)
        if turn is not None:
            if trace and (seq == 0 or not turn.trace):
                turn.trace = trace
            self._store(turn, seq, opus)
            self._wake.set()

    def on_control(self, event: Event) -> None:
        """A control event of the session; those playback has no use for are ignored."""
        if self._closed:
            return
        if isinstance(event, TurnEnded):
            if event.npc is not None:
                self._texts.remember(event.turn_id, event.reply_text)
        elif isinstance(event, NpcSpeak):
            self._texts.remember(event.request_id, event.text)
        elif isinstance(event, AudioDone):
            self._audio_done(event)
        elif isinstance(event, BargeIn):
            self._barge_in(event)
        elif isinstance(event, Flush):
            self._flush(event)
        else:
            return
        self._settle_played(self._clock())
        self._wake.set()

    @property
    def audible(self) -> tuple[str, str] | None:
        """``(turn_id, npc)`` of the turn players are hearing, if any."""
        head = self._head()
        return (head.turn_id, head.npc) if head is not None and head.sent else None

    # --- running ------------------------------------------------------------------------

    def start(self) -> None:
        """Run the pacing loop in a task of its own (stopped by :meth:`close`)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="playback")

    async def run(self) -> None:
        """Pace frames until :meth:`close`; sleeps while there is nothing to do."""
        deadline = self._clock()
        while not self._closed:
            if self._idle():
                self._wake.clear()
                await self._wake.wait()
                deadline = self._clock()
                continue
            now = self._clock()
            if now - deadline > self._resync_ns:
                self.stats.resyncs += 1
                deadline = now
            self.tick(now)
            deadline += FRAME_NS
            await self._sleep(max(0, deadline - self._clock()) / 1e9)

    async def close(self) -> None:
        """Stop playing: turns still queued end cut short and every pending Played goes out."""
        if not self._closed:
            self._closed = True
            now = self._clock()
            for turn in list(self._turns.values()):
                self._end(turn, complete=False, reason="closed", now=now)
            self._settle_played(now, force=True)
            self._set_speaking(None)
            self._wake.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    def tick(self, now: int | None = None) -> None:
        """One 20 ms step: send at most one packet, end turns that are over, settle Played."""
        now = self._clock() if now is None else now
        audio = self._next_audio(now)
        if audio is not None:
            turn, opus = audio
            if not turn.sent:
                turn.first_played_ns = self._wall()
                self._set_speaking(turn)
            turn.sent += 1
            self._silence_owed = self._config.silence_frames
            self.stats.frames_sent += 1
            self._send(opus)
            self._end_if_over(turn, now)
        elif self._silence_owed:
            self._silence_owed -= 1
            self.stats.silence_sent += 1
            self._send(SILENCE_FRAME)
        if not self._silence_owed:
            self._after_turn = False
            if self._speaking is not None and self._speaking is not self._head():
                self._set_speaking(None)
        self._settle_played(now)

    # --- frames -------------------------------------------------------------------------

    def _new_turn(self, npc: str, turn_id: str, published_ns: int) -> _Turn | None:
        try:
            validate_token(npc, "npc")
            _TURN_ID.validate_python(turn_id)
        except (InvalidToken, ValidationError):
            raise InvalidFrame(f"frame of turn {turn_id[:130]!r} by {npc[:70]!r}") from None
        done = self._done.get(turn_id)
        cutoff = max(self._flushed_at.get(npc, 0), self._flushed_at.get("*", 0))
        if turn_id in self._finished or (done is not None and done.cancelled) or (
                published_ns and published_ns <= cutoff):
            self._finished.remember(turn_id, None)
            self.stats.late += 1
            return None
        if len(self._turns) >= self._config.max_turns:
            oldest = next(t for t in self._turns.values() if not t.sent)
            self.stats.turns_dropped += 1
            self._end(oldest, complete=False, reason="too many turns queued", now=self._clock())
        turn = _Turn(turn_id, npc, last_activity=self._clock())
        self._turns[turn_id] = turn
        return turn

    def _store(self, turn: _Turn, seq: int, opus: bytes) -> None:
        done = self._done.get(turn.turn_id)
        if seq < turn.next_seq or (done is not None and seq >= done.frames):
            self.stats.late += 1
        elif seq in turn.frames:
            self.stats.duplicates += 1
        elif seq >= self._max_frames:
            self.stats.overflow += 1
        else:
            turn.frames[seq] = opus
            turn.highest = max(turn.highest, seq)
            turn.last_activity = self._clock()

    def _head(self) -> _Turn | None:
        return next(iter(self._turns.values()), None)

    def _next_audio(self, now: int) -> tuple[_Turn, bytes] | None:
        while (turn := self._head()) is not None:
            if self._after_turn and self._silence_owed:
                return None  # the previous turn's trailing silence goes first
            opus = self._take(turn, now)
            if opus is not None:
                return turn, opus
            done = self._done.get(turn.turn_id)
            if self._end_if_over(turn, now):
                continue
            if done is None and not turn.frames and now - turn.last_activity >= self._stall_ns:
                self._end(turn, complete=False, reason="stalled (no AudioDone)", now=now)
            else:
                return None  # waiting for frames
        return None

    def _end_if_over(self, turn: _Turn, now: int) -> bool:
        """End the turn once its last frame (by AudioDone's count) has gone out."""
        done = self._done.get(turn.turn_id)
        if done is None or turn.next_seq < done.frames or turn.turn_id not in self._turns:
            return False
        self._end(turn, complete=True, reason="played", now=now)
        return True

    def _take(self, turn: _Turn, now: int) -> bytes | None:
        """The turn's next frame, skipping a gap once it has been waited for long enough."""
        opus = turn.frames.pop(turn.next_seq, None)
        if opus is None:
            done = self._done.get(turn.turn_id)
            made = done.frames if done is not None else 0
            if not turn.frames and made <= turn.next_seq:
                turn.missing_since = None
                return None  # tts is behind, or the turn is over
            if turn.missing_since is None:
                turn.missing_since = now
            if now - turn.missing_since < (self._jitter_ns if turn.frames else self._tail_ns):
                return None
            resume = min(turn.frames) if turn.frames else made
            self.stats.skipped += resume - turn.next_seq
            turn.next_seq = resume
            turn.missing_since = None
            opus = turn.frames.pop(resume, None)
            if opus is None:
                return None
        turn.next_seq += 1
        turn.missing_since = None
        turn.last_activity = now
        return opus

    def _send(self, opus: bytes) -> None:
        try:
            self._sink.send(opus)
        except Exception:
            self.stats.sink_errors += 1
            if self.stats.sink_errors == 1 or self.stats.sink_errors % 500 == 0:
                log.warning("voice send failed (%d so far)", self.stats.sink_errors,
                            exc_info=True, extra=self._log_extra)

    # --- stopping -----------------------------------------------------------------------

    def _audio_done(self, event: AudioDone) -> None:
        self._done.remember(event.turn_id, event)
        turn = self._turns.get(event.turn_id)
        if turn is None:
            return
        if event.cancelled:
            self.stats.flushed += 1
            self._end(turn, complete=False, reason="audio cancelled", now=self._clock())
        elif turn.sent and turn is self._head():
            self._end_if_over(turn, self._clock())  # it was waiting for more: it is over

    def _barge_in(self, event: BargeIn) -> None:
        turn = self._head()
        if turn is None or not turn.sent:
            log.debug("barge-in while no NPC is audible", extra=self._log_extra)
            return
        self.stats.bargeins += 1
        log.info("barge-in: %s talked over %s", event.speaker, turn.npc,
                 extra=self._extra(turn))
        self._end(turn, complete=False, reason="bargein", now=self._clock())
        self._emit(Flush(turn_id=turn.turn_id, npc=turn.npc, reason="bargein"))

    def _flush(self, event: Flush) -> None:
        if event.turn_id is not None:
            self._finished.remember(event.turn_id, None)
            matching = [t for t in self._turns.values() if t.turn_id == event.turn_id]
        else:  # frames of this NPC's turns published before now, arriving later, are dropped
            self._flushed_at.remember(event.npc or "*", self._wall())
            matching = [t for t in self._turns.values() if event.npc in (None, t.npc)]
        now = self._clock()
        for turn in matching:
            self.stats.flushed += 1
            self._end(turn, complete=False, reason=f"flush: {event.reason}", now=now)

    def _end(self, turn: _Turn, *, complete: bool, reason: str, now: int) -> None:
        del self._turns[turn.turn_id]
        self._finished.remember(turn.turn_id, None)
        if turn.sent:
            self._after_turn = True
        if turn.sent and turn.trace:
            tracing.record("edge: playback", turn.trace, turn.first_played_ns, self._wall(),
                           tenant=self._log_extra.get("tenant"),
                           session=self._log_extra.get("session"), turn=turn.turn_id,
                           npc=turn.npc, frames=turn.sent, complete=complete, reason=reason)
        deadline = now + int(self._config.played_wait_s * 1e9)
        self._pending.append(_Ending(turn, complete, deadline))
        log.debug("turn %s after %d frames", reason, turn.sent, extra=self._extra(turn))

    # --- reporting ----------------------------------------------------------------------

    def _settle_played(self, now: int, force: bool = False) -> None:
        pending, self._pending = self._pending, []
        waiting = []
        for ending in pending:
            played = self._played(ending, force or now >= ending.deadline)
            if played is None:
                waiting.append(ending)
            else:
                self._emit(played)
        self._pending[:0] = waiting

    def _played(self, ending: _Ending, now_or_never: bool) -> Played | None:
        turn = ending.turn
        if not turn.sent:
            return Played(turn_id=turn.turn_id, npc=turn.npc, text_heard="", complete=False)
        text, done = self._texts.get(turn.turn_id), self._done.get(turn.turn_id)
        if not now_or_never and (text is None or (done is None and not ending.complete)):
            return None
        if text is None:
            log.warning("played without the turn's text", extra=self._extra(turn))
        heard = text or ""
        if not ending.complete:
            made = done.frames if done is not None else turn.highest + 1
            heard = heard_prefix(heard, turn.next_seq / max(made, turn.next_seq, 1))
        return Played(turn_id=turn.turn_id, npc=turn.npc, text_heard=heard,
                      complete=ending.complete, first_played_ns=turn.first_played_ns)

    def _emit(self, event: Event) -> None:
        try:
            self._emit_to(event)
        except Exception:
            log.exception("emitting %s failed", event.type, extra=self._log_extra)

    def _set_speaking(self, turn: _Turn | None) -> None:
        previous, self._speaking = self._speaking, turn
        if self._speaking_cb is None:
            return
        for changed, on in ((previous, False), (turn, True)):
            if changed is None:
                continue
            try:
                self._speaking_cb(changed.npc, on)
            except Exception:
                log.exception("speaking callback failed", extra=self._log_extra)

    def _idle(self) -> bool:
        return not (self._turns or self._pending or self._silence_owed or self._speaking)

    @property
    def idle(self) -> bool:
        """Nothing queued, playing or owed (no Played still waiting)."""
        return self._idle()

    def _extra(self, turn: _Turn) -> dict[str, object]:
        return {**self._log_extra, "turn": turn.turn_id, "npc": turn.npc}
