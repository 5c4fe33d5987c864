"""One live Discord session bridged to its subjects.

In: each player's opus packet (from ``voice_receive``) goes through :class:`Inbound` to
``audio.in.<speaker>``. Out: the session's ``audio.out`` frames and control events feed a
:class:`Playback` that plays into the voice connection; what it emits (``ctl.flush`` on a
barge-in, ``ctl.played``) is published. A ``session.stopped`` event ends the bridge.

Packets reach the bridge on the event loop as plain calls; one task publishes them in
order, behind a bounded queue (a full queue drops and counts rather than stall the voice
connection). Both consumers start at "now": after an edge restart the session's old audio
is not replayed into the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from glyphoxa_bus.follow import follow
from glyphoxa_bus.streams import CONTROL, MEDIA
from glyphoxa_discord_edge.inbound import Bus, Inbound
from glyphoxa_discord_edge.playback import FrameSink, InvalidFrame, Playback, PlaybackConfig
from glyphoxa_events import frames
from glyphoxa_events import headers as H
from glyphoxa_events.models import Event, MalformedEvent, SessionStopped, parse_control
from glyphoxa_events.subjects import SessionSubjects, parse_subject
from glyphoxa_events.tokens import InvalidToken
from glyphoxa_runtime import tracing

log = logging.getLogger("glyphoxa.discord_edge.bridge")

QUEUE = 2_000  # ~4 s of 10 speakers' packets


@dataclass
class BridgeCounters:
    queue_dropped: int = 0
    bad_frames: int = 0
    bad_events: int = 0


class SessionBridge:
    def __init__(self, nc: Client, bus: Bus, subjects: SessionSubjects, sink: FrameSink,
                 display_name: Callable[[int], str], *,
                 on_stopped: Callable[[str], Awaitable[None]] | None = None,
                 speaking: Callable[[str, bool], None] | None = None,
                 playback: PlaybackConfig | None = None):
        self._nc, self._bus, self.subjects = nc, bus, subjects
        self._on_stopped = on_stopped
        self.inbound = Inbound(bus, subjects, display_name)
        self.playback = Playback(sink, self._emit, speaking=speaking, config=playback,
                                 log_extra={"tenant": subjects.tenant, "session": subjects.session})
        self.counters = BridgeCounters()
        self._queue: asyncio.Queue[tuple[int, int, int, bytes, int] | Event] = asyncio.Queue(QUEUE)
        self._subs: list = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> None:
        js = self._nc.jetstream()
        s = self.subjects
        self._subs.append(await follow(js, s.audio_out("*"), MEDIA, self._on_frame,
                                       DeliverPolicy.NEW))
        self._subs.append(await follow(js, s.ctl(">"), CONTROL, self._on_ctl, DeliverPolicy.NEW))
        self._tasks.append(asyncio.create_task(self._publish_loop(), name=f"bridge-{s.session}"))
        self.playback.start()
        log.info("session bridged", extra={"tenant": s.tenant, "session": s.session})

    def packet(self, user_id: int, rtp_seq: int, rtp_ts: int, opus: bytes,
               received_ns: int) -> None:
        """A player's packet, in the clear (``VoiceReceiver``'s ``on_packet``)."""
        self._put((user_id, rtp_seq, rtp_ts, opus, received_ns))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await self.playback.close()  # emits the Played still owed
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), 2.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- in -------------------------------------------------------------------------------

    async def _on_frame(self, msg: Msg) -> None:
        """One ``audio.out`` message: a frame, or several (``glyphoxa_events.frames``)."""
        hdrs = msg.headers or {}
        try:
            npc = parse_subject(msg.subject).leaf
            turn, first = hdrs.get(H.TURN, ""), int(hdrs.get(H.SEQ, "-1"))
            published_ns = int(hdrs.get(H.PUBLISHED_NS, "0") or 0)
            trace = tracing.carried(hdrs)
            for i, packet in enumerate(frames.unpack(hdrs, msg.data)):
                self.playback.feed_frame(npc, turn, first + i, packet, published_ns, trace)
        except (InvalidFrame, InvalidToken, ValueError) as exc:
            self.counters.bad_frames += 1
            log.warning("audio.out frame dropped: %s", exc, extra=self._extra())

    async def _on_ctl(self, msg: Msg) -> None:
        try:
            event = parse_control(msg.data)
        except MalformedEvent as exc:
            self.counters.bad_events += 1
            log.warning("control event dropped: %s", exc, extra=self._extra())
            return
        self.playback.on_control(event)
        if isinstance(event, SessionStopped) and self._on_stopped is not None:
            # not one of self._tasks: the callback closes the bridge, which cancels those
            task = asyncio.create_task(self._on_stopped(event.reason), name="bridge-stopped")
            self._stopping.add(task)  # kept until done (the loop holds tasks weakly)
            task.add_done_callback(self._stopping.discard)

    # --- out ------------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self._put(event)

    def _put(self, item: tuple[int, int, int, bytes, int] | Event) -> None:
        if self._closed and not isinstance(item, Event):
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.counters.queue_dropped += 1

    async def _publish_loop(self) -> None:
        s = self.subjects
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, Event):
                    turn = getattr(item, "turn_id", "") or ""
                    await self._bus.publish_event(
                        s.ctl(item.type), item, f"ctl:{s.tenant}.{s.session}:{item.type}:{turn}")
                else:
                    await self.inbound.packet(*item)
            except Exception:  # a publish failure must not end the bridge
                log.exception("publish failed", extra=self._extra())
            finally:
                self._queue.task_done()

    def _extra(self) -> dict[str, object]:
        return {"tenant": self.subjects.tenant, "session": self.subjects.session}
