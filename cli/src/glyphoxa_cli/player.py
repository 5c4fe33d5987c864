"""The scene player: a test/demo edge that speaks the same subjects as discord-edge.

It plays every player's track into a new session as 20 ms opus frames, Discord style
(frames only while a player makes sound, then five opus silence frames, then nothing), at
real-time pace or ``speed`` times faster, and records what comes back. The capture time of
each frame is scene time (session start + offset), so ``speed`` changes pacing only.

By default the player is the edge: it publishes ``audio.in`` and reports ``ctl.played``
itself. With an ``edge`` (``--edge loopback``: discord-edge's bridge on a local DAVE call,
``glyphoxa_discord_edge.loopback``) the frames go through the edge's real receive path and
bridge instead, and the edge plays the replies and reports what was heard.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from nats.aio.client import Client
from nats.aio.msg import Msg

from glyphoxa_audio.opus import SILENCE_FRAME, OpusEncoder
from glyphoxa_audio.wav import to_stereo
from glyphoxa_bus.follow import follow
from glyphoxa_bus.heartbeat import EDGE_ROLE, HeartbeatPublisher, heartbeating
from glyphoxa_bus.publisher import Publisher, Resender
from glyphoxa_campaign import Campaign
from glyphoxa_cli.scenefile import Scene
from glyphoxa_events import headers as H
from glyphoxa_events.frames import unpack as unpack_frames
from glyphoxa_events.models import (
    AudioDone,
    Outcome,
    Played,
    SessionStopped,
    Transcript,
    TurnEnded,
    UtteranceEnded,
    UtteranceStarted,
    parse_control,
)
from glyphoxa_events.subjects import SessionSubjects, parse_subject

log = logging.getLogger("glyphoxa.scene")
FRAME = 960  # 20 ms at 48 kHz
FRAME_NS = 20_000_000
TRAILING_SILENCE_FRAMES = 5


class Edge(Protocol):
    """An edge in the loop: the player speaks into it instead of publishing."""

    async def start(self, subjects: SessionSubjects) -> None: ...

    def speak(self, speaker: str, opus: bytes, at_ns: int) -> None: ...

    async def close(self, drain_s: float = 30.0) -> None:
        """Let go of the session, after playing what is queued (at most ``drain_s``)."""
        ...


class SessionDoor(Protocol):
    """How the player starts and stops its session (session-control's admin API)."""

    tenant: str

    async def start(self) -> str: ...

    async def stop(self, session: str, reason: str) -> None: ...


@dataclass
class Outgoing:
    """One player's frames: (frame index on the timeline, opus packet)."""

    speaker: str
    frames: list[tuple[int, bytes]]


def encode_track(speaker: str, pcm: np.ndarray) -> Outgoing:
    encoder = OpusEncoder()
    n = len(pcm) // FRAME
    frames: list[tuple[int, bytes]] = []
    silent_run = TRAILING_SILENCE_FRAMES
    for i in range(n):
        chunk = pcm[i * FRAME:(i + 1) * FRAME]
        if np.any(chunk):
            frames.append((i, encoder.encode(to_stereo(chunk))))
            silent_run = 0
        elif silent_run < TRAILING_SILENCE_FRAMES:
            frames.append((i, SILENCE_FRAME))
            silent_run += 1
    return Outgoing(speaker, frames)


FRAMES_GRACE_S = 5.0
"""How long the player waits, after a turn's ``AudioDone``, for frames of it still missing."""


@dataclass
class Collected:
    """Everything the session produced, as it arrived."""

    utterances: dict[str, UtteranceStarted] = field(default_factory=dict)
    ended: dict[str, UtteranceEnded] = field(default_factory=dict)
    finals: dict[str, Transcript] = field(default_factory=dict)
    turns: dict[str, TurnEnded] = field(default_factory=dict)
    audio_done: dict[str, AudioDone] = field(default_factory=dict)
    audio_done_mono: dict[str, float] = field(default_factory=dict)  # when each came
    frames: dict[str, list[tuple[int, int, bytes, str]]] = field(default_factory=lambda: defaultdict(list))
    received: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    """Each turn's distinct frame numbers so far (``pending`` asks every 0.1 s)."""
    first_audio_ns: dict[str, int] = field(default_factory=dict)
    played_sent: set[str] = field(default_factory=set)
    last_event_mono: float = field(default_factory=time.monotonic)
    stopped: SessionStopped | None = None
    """The session was stopped (by us at the end, or by the system before: then what it
    still owes will not come, and the reason says why)."""

    def pending(self) -> list[str]:
        """What the session still owes us (empty once every utterance is fully handled)."""
        waiting = [f"vad end of {u}" for u in self.utterances if u not in self.ended]
        waiting += [f"transcript of {u}" for u in self.ended if u not in self.finals]
        waiting += [f"turn for {u}" for u in self.finals if u not in self.turns]
        waiting += [f"audio of {t}" for t, turn in self.turns.items()
                    if turn.outcome == Outcome.answered and t not in self.audio_done]
        # the frames tts says it sent, which follow on a stream of their own (for a while:
        # one that never comes is reported as missing in the turn's row, not waited for)
        now = time.monotonic()
        for t, done in self.audio_done.items():
            got = len(self.received.get(t, ()))
            if got < done.frames and now - self.audio_done_mono.get(t, now) < FRAMES_GRACE_S:
                waiting.append(f"frames of {t} ({got} of {done.frames})")
        return waiting


class ScenePlayer:
    def __init__(self, nc: Client, scene: Scene, campaign: Campaign, door: SessionDoor,
                 speed: float = 1.0, timeout_s: float = 180.0, edge: Edge | None = None,
                 outgoing: list[Outgoing] | None = None):
        if speed < 1.0:
            raise ValueError("--speed must be at least 1 (a slower replay would stretch silences)")
        self.nc, self.scene, self.campaign, self.door = nc, scene, campaign, door
        self.tenant, self.speed, self.timeout_s = door.tenant, speed, timeout_s
        self.edge = edge
        self.outgoing = outgoing  # frames to send as they are (a replay), else the scene's encoded
        self._live = False
        self.collected = Collected()
        self.session = ""
        self.t0_ns = 0
        self.t0_wall_ns = 0
        self._subs: list = []

    # --- run ------------------------------------------------------------------------------

    async def play(self) -> Collected:
        """Play the scene into a new session, heartbeating as edge ``scene-<pid>`` meanwhile."""
        self._heartbeat = HeartbeatPublisher(self.nc, EDGE_ROLE, f"scene-{os.getpid()}",
                                             self._playing, capacity=1)
        async with heartbeating(self._heartbeat):
            return await self._play()

    def _playing(self) -> list[str]:
        return [f"{self.tenant}.{self.session}"] if self.session and self._live else []

    async def _play(self) -> Collected:
        outgoing = (self.outgoing if self.outgoing is not None
                    else [encode_track(s, pcm) for s, pcm in self.scene.tracks.items()])
        self.session = await self.door.start()
        self._live = True
        self._heartbeat.poke()
        subjects = SessionSubjects(self.tenant, self.session)
        log.info("session started", extra={"tenant": self.tenant, "session": self.session})
        await self._subscribe(subjects)
        if self.edge is not None:
            await self.edge.start(subjects)
        try:
            await self._send(subjects, outgoing)
            await self._wait_done()
            if self.edge is not None:
                await self.edge.close()  # once the last reply has been played
        finally:
            if self.edge is not None:
                await self.edge.close(drain_s=0)  # (already closed unless something failed)
            self._live = False  # the edge lets go first, so the session ends at once
            self._heartbeat.poke()
            await self.door.stop(self.session, "scene finished")
            for sub in self._subs:
                await sub.unsubscribe()
        return self.collected

    async def _send(self, subjects: SessionSubjects, outgoing: list[Outgoing]) -> None:
        # as an edge does: frames the broker lost in an outage go out again, in order
        publisher = Resender(Publisher(self.nc, max_in_flight=512), self.nc)
        try:
            await self._send_all(subjects, outgoing, publisher)
        finally:
            publisher.close()

    async def _send_all(self, subjects: SessionSubjects, outgoing: list[Outgoing],
                        publisher: Resender) -> None:
        schedule = sorted((i, o.speaker, pkt) for o in outgoing for i, pkt in o.frames)
        self.t0_wall_ns = time.time_ns()
        self.t0_ns = self.t0_wall_ns  # scene time zero == wall clock at speed 1
        start = time.monotonic()
        for index, speaker, packet in schedule:
            due = start + index * 0.020 / self.speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.edge is not None:
                self.edge.speak(speaker, packet, self.t0_ns + index * FRAME_NS)
                continue
            capture_ns = self.t0_ns + index * FRAME_NS
            seq = capture_ns // FRAME_NS  # as discord-edge numbers frames (docs/contract.md)
            await publisher.publish(
                subjects.audio_in(speaker), packet,
                msg_id=f"ain:{self.tenant}.{self.session}:{speaker}:{seq}",
                headers={H.SEQ: str(seq), H.CAPTURE_NS: str(capture_ns), H.CODEC: H.CODEC_OPUS})
        await publisher.flush(timeout_s=self.timeout_s)  # (through a broker outage)
        tail_s = self.scene.duration_s - (schedule[-1][0] * 0.020 if schedule else 0)
        await asyncio.sleep(max(0.0, tail_s) / self.speed)

    async def _wait_done(self, quiet_s: float = 1.5) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            quiet = time.monotonic() - self.collected.last_event_mono > quiet_s
            if not self.collected.pending() and quiet:
                return
            stopped = self.collected.stopped
            if stopped is not None and quiet:  # ended under us: what it owes will not come
                log.warning("the session was ended before the scene was done: %s",
                            stopped.reason, extra={"owed": self.collected.pending()[:5]})
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"session {self.session} still owes: {self.collected.pending()[:5]}")

    # --- receive --------------------------------------------------------------------------

    async def _subscribe(self, subjects: SessionSubjects) -> None:
        js = self.nc.jetstream()
        for subject, stream, cb in (
            (subjects.vad("*"), "GLX_EVENTS", self._on_vad),
            (subjects.stt("*"), "GLX_EVENTS", self._on_stt),
            (subjects.ctl(">"), "GLX_CTL", self._on_ctl),
            (subjects.audio_out("*"), "GLX_MEDIA", self._on_audio),
        ):
            self._subs.append(await follow(js, subject, stream, cb))

    def _touch(self) -> None:
        self.collected.last_event_mono = time.monotonic()

    async def _on_vad(self, msg: Msg) -> None:
        kind = (msg.headers or {}).get(H.KIND)
        if kind == "start":
            ev = UtteranceStarted.model_validate_json(msg.data)
            self.collected.utterances[ev.utterance_id] = ev
        elif kind == "end":
            end = UtteranceEnded.model_validate_json(msg.data)
            self.collected.ended[end.utterance_id] = end
        self._touch()

    async def _on_stt(self, msg: Msg) -> None:
        t = Transcript.model_validate_json(msg.data)
        if t.final:
            self.collected.finals[t.utterance_id] = t
        self._touch()

    async def _on_ctl(self, msg: Msg) -> None:
        event = parse_control(msg.data)
        if isinstance(event, TurnEnded):
            self.collected.turns[event.turn_id] = event
            done = self.collected.audio_done.get(event.turn_id)
            if done is not None:  # tts finished before the brain's turn event came
                await self._report_played(done)
        elif isinstance(event, AudioDone):
            self.collected.audio_done[event.turn_id] = event
            self.collected.audio_done_mono[event.turn_id] = time.monotonic()
            await self._report_played(event)
        elif isinstance(event, SessionStopped):
            self.collected.stopped = event
        self._touch()

    async def _on_audio(self, msg: Msg) -> None:
        hdrs = msg.headers or {}
        turn, seq = hdrs.get(H.TURN, ""), int(hdrs.get(H.SEQ, "0"))
        arrival = time.time_ns()
        npc = parse_subject(msg.subject).leaf
        for i, packet in enumerate(unpack_frames(hdrs, msg.data)):
            self.collected.frames[turn].append((seq + i, arrival, packet, npc))
            self.collected.received[turn].add(seq + i)
        if turn not in self.collected.first_audio_ns:
            self.collected.first_audio_ns[turn] = int(hdrs.get(H.PUBLISHED_NS, arrival))
        self._touch()

    async def _report_played(self, done: AudioDone) -> None:
        """What an edge does after playback: tell the brain what the table actually heard.
        Once both the audio and the turn (its text) are in, whichever came last: tts may
        finish a short reply before the brain's turn event arrives (a real edge is still
        playing it then)."""
        turn = self.collected.turns.get(done.turn_id)
        if (self.edge is not None or done.cancelled or turn is None
                or done.turn_id in self.collected.played_sent):
            return  # an edge in the loop reports what it played
        self.collected.played_sent.add(done.turn_id)
        event = Played(turn_id=done.turn_id, npc=done.npc, text_heard=turn.reply_text, complete=True,
                       first_played_ns=self.collected.first_audio_ns.get(done.turn_id, 0))
        subjects = SessionSubjects(self.tenant, self.session)
        await self.nc.jetstream().publish(
            subjects.ctl("played"), event.to_bytes(),
            headers={H.MSG_ID: f"ctl:{self.tenant}.{self.session}:played:{done.turn_id}"})

    # --- results --------------------------------------------------------------------------

    def wall_of(self, capture_ns: int) -> int:
        """Wall-clock time at which a capture (scene) time was sent."""
        return self.t0_wall_ns + int((capture_ns - self.t0_ns) / self.speed)

    def scene_seconds(self, wall_ns: int) -> float:
        return (wall_ns - self.t0_wall_ns) * self.speed / 1e9
