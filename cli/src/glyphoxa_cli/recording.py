"""A recorded session read back from the streams: its players' frames, its events and its
turns in the scene player's turns.jsonl format (``glyphoxa session export|replay``).

Everything is on the session's own clock: time 0 is when it started (its
``session.started``), as in ``glyphoxa session timeline``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.js import JetStreamContext

from glyphoxa_bus.recorded import CaptureClock, Recorded, TooMuch, count_kept, kept_since, read_kept
from glyphoxa_bus.streams import CONTROL, EVENTS, MEDIA
from glyphoxa_campaign import Campaign
from glyphoxa_cli.player import Collected
from glyphoxa_cli.scenefile import Scene, SceneTurn
from glyphoxa_cli.tracks import RecordedFrame, Tracks, rebuild
from glyphoxa_events import headers as H
from glyphoxa_events.models import (
    AudioDone,
    MalformedEvent,
    SessionStarted,
    SessionStopped,
    Transcript,
    TurnEnded,
    parse_as,
    parse_control,
)
from glyphoxa_events.subjects import SessionSubjects, parse_subject


class AgedOut(RuntimeError):
    """The streams no longer keep (all of) the session."""


@dataclass
class Keep:
    """What the streams still keep of a session."""

    frames: int  # its audio.in frames in GLX_MEDIA
    oldest_ns: int | None  # GLX_MEDIA keeps everything stored since then
    started_ns: int  # when the session started

    @property
    def complete(self) -> bool:
        return self.frames > 0 and self.oldest_ns is not None and self.oldest_ns <= self.started_ns

    def describe(self) -> str:
        if self.complete:
            return "yes"
        if self.frames:
            return "partly (its start aged out)"
        if self.oldest_ns is not None and self.oldest_ns > self.started_ns:
            return "no (aged out)"
        return "no (no audio)"


async def keep_of(js: JetStreamContext, tenant: str, session: str, started_ns: int) -> Keep:
    frames = await count_kept(js, MEDIA, SessionSubjects(tenant, session).audio_in("*"))
    return Keep(frames, await kept_since(js, MEDIA), started_ns)


@dataclass
class Recording:
    """What the turn-row and track code needs of a session, like a ScenePlayer after play."""

    tenant: str
    session: str
    campaign: Campaign
    t0_ns: int  # the session's start; the timeline's 0
    frames: list[RecordedFrame] = field(default_factory=list)
    collected: Collected = field(default_factory=Collected)
    clock: CaptureClock | None = None  # when its capture clock ran ahead (a scene at --speed)
    scene: Scene | None = None

    @property
    def speed(self) -> float:
        return 1.0

    def wall_of(self, capture_ns: int) -> int:
        """When a capture time was published: the same but for a scene played faster than
        real time, whose capture clock ran ahead."""
        return self.clock.wall_of(capture_ns) if self.clock else capture_ns

    def capture_of(self, wall_ns: int) -> int:
        return self.clock.capture_of(wall_ns) if self.clock else wall_ns

    def tracks(self) -> Tracks:
        return rebuild(self.frames, origin_ns=self.t0_ns)


async def read_recording(js: JetStreamContext, tenant: str, session: str, campaign: Campaign,
                         started_ns: int, audio: bool = True) -> Recording:
    """The session's events (and with ``audio`` its players' frames) as the streams keep them."""
    subjects = SessionSubjects(tenant, session)
    rec = Recording(tenant, session, campaign, started_ns)
    # (not vad.*: the turns need stt's finals, and vad's subjects carry the utterances' audio)
    for msg in [*await read_kept(js, EVENTS, f"{subjects.prefix}.stt.*"),
                *await read_kept(js, CONTROL, subjects.ctl(">"))]:
        _collect(rec, msg)
    try:  # without audio, the frames' headers still give the clock
        media = await read_kept(js, MEDIA, subjects.audio_in("*"), headers_only=not audio)
    except TooMuch:
        if audio:
            raise
        media = []
    pairs = []
    for msg in media:
        frame = _frame(msg)
        if frame is not None:
            if audio:
                rec.frames.append(frame)
            pairs.append((frame.capture_ns, msg.stored_ns))
    rec.clock = CaptureClock.of(pairs)
    return rec


def _frame(msg: Recorded) -> RecordedFrame | None:
    try:
        return RecordedFrame(parse_subject(msg.subject).leaf, int(msg.headers[H.SEQ]),
                             int(msg.headers[H.CAPTURE_NS]), msg.data)
    except (KeyError, ValueError):
        return None  # not an edge's frame (no sequence or capture time): not replayable


def _collect(rec: Recording, msg: Recorded) -> None:
    c, kind = rec.collected, parse_subject(msg.subject).kind
    try:
        if kind == "stt":
            t = parse_as(Transcript, msg.data)
            if t.final:
                c.finals[t.utterance_id] = t
        elif kind == "ctl":
            event = parse_control(msg.data)
            if isinstance(event, TurnEnded):
                c.turns[event.turn_id] = event
            elif isinstance(event, AudioDone):
                c.audio_done[event.turn_id] = event
                if event.first_audio_ns:
                    c.first_audio_ns[event.turn_id] = event.first_audio_ns
            elif isinstance(event, SessionStopped):
                c.stopped = event
            elif isinstance(event, SessionStarted):
                rec.t0_ns = event.started_ns
    except MalformedEvent:
        return


def scene_turns(rows: list[dict], shift_s: float = 0.0) -> list[SceneTurn]:
    """The recorded turns as a scene's ground truth (``shift_s`` later): what was heard and
    whom it went to."""
    return [SceneTurn(r["player"], r["start_s"] + shift_s, r["end_s"] + shift_s, r["transcript"],
                      r["npc"], (r.get("routing") or {}).get("kind", r["outcome"])) for r in rows]
