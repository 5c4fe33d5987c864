"""A session's turns on one time axis (``GET /v1/sessions/{id}/timeline``,
``glyphoxa session timeline``).

Built from what the streams still keep of the session: stt's final transcripts (with vad's
utterance start, speech end and end of utterance), the brain's turn (routing, first token, first sentence, outcome and
why), tts' first audio and end, the edge's playback, barge-ins and flushes. Once the
streams have dropped the session, from the turn table instead (its latency stamps only).
Times are milliseconds after the session started.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from nats.js import JetStreamContext
from pydantic import BaseModel, Field

from glyphoxa_bus.recorded import CaptureClock, Recorded, TooMuch, read_kept
from glyphoxa_bus.streams import CONTROL, EVENTS, MEDIA
from glyphoxa_events import headers as H
from glyphoxa_events.models import (
    AudioDone,
    BargeIn,
    Event,
    Flush,
    MalformedEvent,
    Outcome,
    Played,
    SessionStarted,
    SessionStopped,
    Transcript,
    TurnEnded,
    UtteranceEnded,
    UtteranceStarted,
    parse_as,
    parse_control,
)
from glyphoxa_events.subjects import SessionSubjects, parse_subject
from glyphoxa_session_control.lifecycle import Sessions
from glyphoxa_session_control.models import TurnRow
from glyphoxa_session_control.reports import Reports

MarkKind = Literal[
    "speech_start", "speech_end", "vad_end", "stt_final", "routed", "first_token",
    "first_sentence", "first_audio_published", "first_audio_played", "audio_done",
    "cancelled", "failed"]
MARK_ORDER: tuple[str, ...] = MarkKind.__args__  # type: ignore[attr-defined]
MAX_CLOCK_FRAMES = 200_000  # audio.in frames read for a sped-up scene's clock (~1 h of speech)


class Mark(BaseModel):
    kind: MarkKind
    at_ms: float = Field(description="ms after the session started")
    detail: str = ""


class TimelineTurn(BaseModel):
    turn_id: str
    speaker: str
    transcript: str = ""
    npc: str | None = None
    npc_name: str | None = Field(None, description="the NPC's name in the session's campaign")
    outcome: str = Field("missing", description="the turn's outcome; missing: no turn event kept")
    reason: str = ""
    reply: str = ""
    routing: dict[str, Any] | None = Field(None, description="how the line was routed, when recorded")
    failure: dict[str, Any] | None = Field(None, description="the stage and error of a failed turn")
    memories: list[str] = Field(default_factory=list,
                                description="memories of earlier sessions recalled into the reply")
    marks: list[Mark] = Field(default_factory=list)

    def at(self, kind: str) -> float | None:
        return next((m.at_ms for m in self.marks if m.kind == kind), None)


class SessionMark(BaseModel):
    kind: Literal["started", "stopped", "bargein", "flush"]
    at_ms: float
    detail: str = ""


class Timeline(BaseModel):
    tenant: str
    session: str
    origin_ns: int = Field(description="the session's start (unix ns); at_ms counts from here")
    source: Literal["stream", "record", "stream+record"] = Field(
        description="stream: from the replayable streams; record: the streams no longer keep "
                    "the session's turns, so from the turn table (fewer marks); stream+record: "
                    "its early turns from the turn table")
    turns: list[TimelineTurn]
    events: list[SessionMark]


class Timelines:
    def __init__(self, js: JetStreamContext, sessions: Sessions, reports: Reports):
        self._js, self._sessions, self._reports = js, sessions, reports

    async def of(self, tenant: str, sid: str) -> Timeline:
        session = await self._sessions.get(tenant, sid)  # NotFound for another tenant's
        subjects = SessionSubjects(tenant, sid)
        # (not vad.*: its events are in stt's finals, and it carries the utterances' audio)
        messages = [*await read_kept(self._js, EVENTS, f"{subjects.prefix}.stt.*"),
                    *await read_kept(self._js, CONTROL, subjects.ctl(">"))]
        start = session.started_at or session.created_at
        origin_ns = int(start.timestamp() * 1e9)
        recorded = from_turn_rows(tenant, sid, await self._reports.turns(tenant, sid), origin_ns)
        if not messages:
            return recorded
        timeline = build_timeline(tenant, sid, messages, origin_ns,
                                  await self._clock(subjects, messages))
        return merged(timeline, recorded)


    async def _clock(self, subjects: SessionSubjects, messages: list[Recorded]) -> CaptureClock | None:
        """For a scene played faster than real time (its speech ends after vad saw it end),
        when each capture time was published, from its audio.in frames' headers; None for
        a session in real time (an edge's) and past ``MAX_CLOCK_FRAMES``."""
        ahead = any(isinstance(e, Transcript) and 0 < e.vad_end_ns < e.speech_end_ns
                    for _, e in parse_recorded(m for m in messages if ".stt." in m.subject))
        if not ahead:
            return None
        try:
            frames = await read_kept(self._js, MEDIA, subjects.audio_in("*"), headers_only=True,
                                     limit=MAX_CLOCK_FRAMES)
        except TooMuch:
            return None
        pairs = []
        for f in frames:
            try:
                pairs.append((int(f.headers[H.CAPTURE_NS]), f.stored_ns))
            except (KeyError, ValueError):
                continue
        return CaptureClock.of(pairs)


def parse_recorded(messages: Iterable[Recorded]) -> list[tuple[Recorded, Event]]:
    """The events of a session's vad, stt and ctl messages (malformed ones skipped)."""
    out: list[tuple[Recorded, Event]] = []
    for msg in messages:
        kind = parse_subject(msg.subject).kind
        try:
            if kind == "vad":
                model = UtteranceStarted if msg.headers.get(H.KIND) == "start" else UtteranceEnded
                out.append((msg, parse_as(model, msg.data)))
            elif kind == "stt":
                out.append((msg, parse_as(Transcript, msg.data)))
            elif kind == "ctl":
                out.append((msg, parse_control(msg.data)))
        except MalformedEvent:
            continue
    return out


def build_timeline(tenant: str, sid: str, messages: Iterable[Recorded], origin_ns: int,
                   clock: CaptureClock | None = None) -> Timeline:
    """``clock``: the session's capture clock ran ahead (a sped-up scene); its speech times
    are put on the wall clock with it, like everything else."""
    events = parse_recorded(messages)
    started = next((e for _, e in events if isinstance(e, SessionStarted)), None)
    if started is not None:
        origin_ns = started.started_ns
    names = {npc.token: npc.name for npc in started.campaign.npcs} if started else {}

    def ms(ns: int) -> float:
        return round((ns - origin_ns) / 1e6, 1)

    def spoken(ns: int) -> int:  # a capture time on the wall clock
        return clock.wall_of(ns) if clock is not None and ns else ns

    turns: dict[str, TimelineTurn] = {}
    session_marks: list[SessionMark] = []

    def turn(turn_id: str, speaker: str = "") -> TimelineTurn:
        if turn_id not in turns:
            turns[turn_id] = TimelineTurn(turn_id=turn_id, speaker=speaker)
        elif speaker and not turns[turn_id].speaker:
            turns[turn_id].speaker = speaker
        return turns[turn_id]

    def mark(t: TimelineTurn, kind: str, ns: int, detail: str = "") -> None:
        if ns and t.at(kind) is None:
            t.marks.append(Mark(kind=kind, at_ms=ms(ns), detail=detail))  # type: ignore[arg-type]

    for msg, event in events:
        if isinstance(event, UtteranceStarted):
            mark(turn(event.utterance_id, event.speaker), "speech_start", spoken(event.start_ns))
        elif isinstance(event, UtteranceEnded):
            t = turn(event.utterance_id, event.speaker)
            mark(t, "speech_start", spoken(event.start_ns))
            mark(t, "speech_end", spoken(event.speech_end_ns), f"{event.audio_ms} ms of speech")
            mark(t, "vad_end", event.vad_end_ns)
        elif isinstance(event, Transcript) and event.final:
            t = turn(event.utterance_id, event.speaker)
            t.transcript = t.transcript or event.text
            mark(t, "speech_start", spoken(event.start_ns))
            mark(t, "speech_end", spoken(event.speech_end_ns))
            mark(t, "vad_end", event.vad_end_ns)
            mark(t, "stt_final", event.stt_final_ns or msg.stored_ns,
                 f"stt failed: {event.error}" if event.error else event.provider)
        elif isinstance(event, TurnEnded):
            t = turn(event.turn_id, event.speaker)
            t.npc_name = names.get(event.npc or "", event.npc)
            _turn_ended(t, event, mark, msg.stored_ns, spoken)
        elif isinstance(event, AudioDone):
            t = turn(event.turn_id)
            mark(t, "first_audio_published", event.first_audio_ns, event.npc)
            mark(t, "audio_done", msg.stored_ns, f"{event.frames} frames; {event.reason}")
            if event.cancelled:
                mark(t, "cancelled", msg.stored_ns, f"tts: {event.reason}")
        elif isinstance(event, Played):
            mark(turn(event.turn_id), "first_audio_played", event.first_played_ns or msg.stored_ns,
                 "heard to the end" if event.complete else f"cut off after {event.text_heard!r}")
        elif isinstance(event, BargeIn):
            session_marks.append(SessionMark(kind="bargein", at_ms=ms(spoken(event.at_ns)),
                                             detail=f"{event.speaker} kept talking: a barge-in if an NPC "
                                                    "was audible (the edge decides, ADR 0003)"))
        elif isinstance(event, Flush):
            session_marks.append(SessionMark(kind="flush", at_ms=ms(msg.stored_ns), detail=(
                f"{event.turn_id or 'every turn'}: {event.reason}")))
        elif isinstance(event, SessionStarted):
            session_marks.append(SessionMark(kind="started", at_ms=ms(event.started_ns),
                                             detail=f"campaign {event.campaign.name}, edge {event.edge}"))
        elif isinstance(event, SessionStopped):
            session_marks.append(SessionMark(kind="stopped", at_ms=ms(event.stopped_ns or msg.stored_ns),
                                             detail=event.reason))
    for t in turns.values():
        t.marks.sort(key=lambda m: (m.at_ms, MARK_ORDER.index(m.kind)))
    ordered = sorted(turns.values(), key=lambda t: (t.marks[0].at_ms if t.marks else 0.0, t.turn_id))
    return Timeline(tenant=tenant, session=sid, origin_ns=origin_ns, source="stream",
                    turns=ordered, events=sorted(session_marks, key=lambda m: m.at_ms))


def _turn_ended(t: TimelineTurn, event: TurnEnded, mark: Any, stored_ns: int, spoken: Any) -> None:
    t.transcript = event.transcript or t.transcript
    t.npc, t.outcome, t.reason, t.reply = event.npc, str(event.outcome), event.reason, event.reply_text
    t.routing = _as_dict(getattr(event, "routing", None))
    t.failure = _as_dict(getattr(event, "failure", None))
    t.memories = list(event.memories)
    lat = event.latency
    mark(t, "speech_end", spoken(lat.speech_end_ns))
    mark(t, "vad_end", lat.vad_end_ns)
    mark(t, "stt_final", lat.stt_final_ns)
    mark(t, "routed", lat.stt_final_ns or stored_ns, _routing_text(t))
    mark(t, "first_token", lat.first_token_ns, event.llm_provider or "")
    mark(t, "first_sentence", lat.first_sentence_ns)
    if event.outcome in (Outcome.failed, Outcome.timed_out):
        mark(t, "failed", stored_ns, _failure_text(t))
    elif event.outcome == Outcome.cancelled:
        mark(t, "cancelled", stored_ns, event.reason)


def _as_dict(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    return dict(value) if isinstance(value, dict) else {"value": str(value)}


def _routing_text(t: TimelineTurn) -> str:
    who = t.npc_name or t.npc or "nobody"
    if t.routing:
        how = t.routing.get("why") or t.routing.get("kind", "")
        return f"{who}: {how}" if how else who
    return f"{who}: {t.reason}" if t.reason else who


def _failure_text(t: TimelineTurn) -> str:
    if t.failure:  # which stage, provider, error, retryable: whatever the brain recorded
        return "; ".join(f"{k} {v}" for k, v in t.failure.items())
    return t.reason


def merged(timeline: Timeline, recorded: Timeline) -> Timeline:
    """The streams' timeline with the turns only the turn table still has (the streams
    dropped the session's start, or all of it) put on the same clock."""
    seen = {t.turn_id for t in timeline.turns}
    missing = [t for t in recorded.turns if t.turn_id not in seen]
    if not missing:
        return timeline
    shift = (recorded.origin_ns - timeline.origin_ns) / 1e6
    for t in missing:
        t.marks = [m.model_copy(update={"at_ms": round(m.at_ms + shift, 1)}) for m in t.marks]
    turns = sorted([*timeline.turns, *missing],
                   key=lambda t: (t.marks[0].at_ms if t.marks else 0.0, t.turn_id))
    source = "record" if not timeline.turns else "stream+record"
    return timeline.model_copy(update={"turns": turns, "source": source})


def from_turn_rows(tenant: str, sid: str, rows: list[TurnRow], origin_ns: int) -> Timeline:
    """The timeline the turn table still gives once the streams have dropped the session."""
    turns = []
    for row in rows:
        t = TimelineTurn(turn_id=row.turn_id, speaker=row.speaker, transcript=row.transcript,
                         npc=row.npc, outcome=row.outcome, reason=row.reason,
                         routing=_as_dict(getattr(row, "routing", None)),
                         failure=_as_dict(getattr(row, "failure", None)),
                         memories=list(row.memories))
        for kind, key in (("speech_end", "speech_end_ns"), ("vad_end", "vad_end_ns"),
                          ("stt_final", "stt_final_ns"), ("first_token", "first_token_ns"),
                          ("first_sentence", "first_sentence_ns")):
            ns = row.latency.get(key)
            if ns:
                t.marks.append(Mark(kind=kind, at_ms=round((int(ns) - origin_ns) / 1e6, 1)))  # type: ignore[arg-type]
        turns.append(t)
    return Timeline(tenant=tenant, session=sid, origin_ns=origin_ns, source="record",
                    turns=turns, events=[])
