"""Serving one session of one stage: in-order input, control on the side, safe acks.

A stage replica that holds a session's claim reads the session's input through a
per-session durable consumer with ``AckPolicy.ALL``. It acks only up to the oldest
message it may still need (for example the first frame of an utterance that is not
finished), so when the replica dies the next holder recreates the consumer from the ack
floor and replays exactly what was not finished: nothing is lost, and outputs carry
deterministic ``Nats-Msg-Id`` values so nothing is published twice.

An input counts as done only when the outputs it caused are stored by JetStream (the
session's ``Outbox``). When one of them is not (the broker died with it in flight, or
refused it), the session is served again from its ack floor by the same replica
(``serve_session_durably``): the unstored outputs are made again and the stored ones are
de-duplicated by their ids. Nothing acked is ever lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from glyphoxa_bus.claims import ClaimLost
from glyphoxa_bus.counted import LOGGED_FIRST, worth_logging
from glyphoxa_bus.follow import follow
from glyphoxa_bus.publisher import Outbox, Publisher, PublishError
from glyphoxa_bus.pull import ContinuousPull
from glyphoxa_bus.streams import CONTROL
from glyphoxa_events.models import (
    Event,
    MalformedEvent,
    SessionStarted,
    SessionStopped,
    parse_control,
)
from glyphoxa_events.subjects import SessionSubjects

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputMessage:
    subject: str
    data: bytes
    headers: dict[str, str]
    stream_seq: int


class SessionHandler(Protocol):
    """What a stage implements for one session.

    ``on_message``/``on_tick`` are called in input order and never overlap each other;
    ``on_control`` may run between their awaits.
    """

    async def on_control(self, event: Event) -> None: ...

    async def on_message(self, msg: InputMessage) -> None: ...

    async def on_tick(self) -> None:
        """Called after each batch of input, and without input as ``tick_after_s`` asks
        (timers live here)."""

    def tick_after_s(self) -> float | None:
        """How soon ``on_tick`` must run again when no input arrives: the handler's timers'
        resolution while one is running, ``None`` while none is (the loop then sleeps until
        input or a control event arrives, or ``IDLE_TICK_S`` passes)."""

    def retain_from(self) -> int | None:
        """Lowest stream sequence still needed to redo unfinished work, or None."""

    async def close(self) -> None: ...


@dataclass
class SessionContext:
    stage: str
    subjects: SessionSubjects
    nc: Client
    publisher: Outbox  # a shared Publisher given here is wrapped in this session's Outbox
    started: SessionStarted | None = None
    stopped: SessionStopped | None = None
    metrics_rejected: object | None = None
    rejections: int = 0
    stall_limit_s: float = 0.0
    """The claim's lease: a serve loop that stalled longer stops (``ClaimLost``) before it
    reads more input, which another replica may be reading by now. 0: no limit."""

    def __post_init__(self) -> None:
        if isinstance(self.publisher, Publisher):
            self.publisher = Outbox(self.publisher)

    @property
    def tenant(self) -> str:
        return self.subjects.tenant

    @property
    def session(self) -> str:
        return self.subjects.session

    def log_extra(self, **more: object) -> dict[str, object]:
        return {"tenant": self.tenant, "session": self.session, "stage": self.stage, **more}

    def reject(self, reason: str, detail: str, subject: str = "", level: int = logging.WARNING,
               logger: logging.Logger | None = None, **more: object) -> None:
        """A message of this session rejected: always counted
        (``glyphoxa_<service>_rejected_messages_total{stage,reason}``), logged for the first
        ``LOGGED_REJECTIONS`` of the session and then every 100th with the count so far, so
        a flood of bad input cannot flood the logs. ``logger``: the stage's own."""
        self.rejections += 1
        counter = self.metrics_rejected
        if counter is not None:
            counter.labels(stage=self.stage, reason=reason).inc()  # type: ignore[attr-defined]
        if worth_logging(self.rejections):
            where = f" on {subject[:200]}" if subject else ""
            (logger or log).log(level, "rejected message%s: %s", where, detail[:500], extra=self.log_extra(
                reason=reason, rejected_so_far=self.rejections, **more))


def input_consumer_name(stage: str, subjects: SessionSubjects) -> str:
    return f"{stage}-{subjects.tenant}-{subjects.session}"


LOGGED_REJECTIONS = LOGGED_FIRST
"""Rejections logged one by one per session and stage; after that only every 100th."""


class AckTracker:
    """Acks (AckPolicy.ALL) the newest processed message that nothing still depends on and
    whose outputs are all stored.

    A message the handler no longer needs (below ``retain_from``) is stamped with the
    number of publishes the session had made by then: everything it caused is among them.
    It is acked once the outbox says that many are stored.
    """

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._processed: deque[tuple[int, Msg]] = deque()
        self._released: deque[tuple[int, int, Msg]] = deque()  # (seq, publishes then, msg)
        self.acked_seq = 0

    @property
    def pending(self) -> bool:
        """Messages handled but not acked yet."""
        return bool(self._processed or self._released)

    def processed(self, seq: int, msg: Msg) -> None:
        self._processed.append((seq, msg))

    async def advance(self, retain_from: int | None) -> None:
        if self._processed:
            floor = self._processed[-1][0] if retain_from is None else retain_from - 1
            issued = self._outbox.issued
            while self._processed and self._processed[0][0] <= floor:
                seq, msg = self._processed.popleft()
                self._released.append((seq, issued, msg))
        if not self._released:
            return
        stored = self._outbox.stored_through()
        target: Msg | None = None
        while self._released and self._released[0][1] <= stored:
            seq, _, target = self._released.popleft()
            self.acked_seq = seq
        if target is not None:
            try:
                await target.ack()
            except NatsError as exc:  # a later ack covers it (AckPolicy.ALL)
                log.debug("ack not sent: %s", exc)


async def open_input(
    js: JetStreamContext, stream: str, name: str, filter_subjects: list[str]
) -> ContinuousPull:
    """(Re)create the per-session consumer starting right after its ack floor."""
    start_seq = 0
    try:
        info = await js.consumer_info(stream, name)
        start_seq = info.ack_floor.stream_seq + 1 if info.ack_floor and info.ack_floor.stream_seq else 0
        await js.delete_consumer(stream, name)
    except NotFoundError:
        pass
    config = ConsumerConfig(
        durable_name=name,
        ack_policy=AckPolicy.ALL,
        ack_wait=300,
        max_ack_pending=100_000,
        inactive_threshold=3600.0,
        filter_subjects=filter_subjects,
    )
    if start_seq:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start_seq
    else:
        config.deliver_policy = DeliverPolicy.ALL
    await js.add_consumer(stream, config)
    return await ContinuousPull(js._nc, stream, name).start()


IDLE_TICK_S = 1.0
"""The longest a session's loop sleeps without input: its outbox's expired publishes are
noticed this late at worst (a session says nothing most of the time, and 20 of them waking
every 50 ms cost a stage a few hundredths of a core: ``./task bench-bus-costs``)."""


async def serve_session(
    ctx: SessionContext,
    handler: SessionHandler,
    input_stream: str,
    filter_subjects: list[str],
    tick_s: float = 0.05,
    start_timeout_s: float = 15.0,
    idle_tick_s: float = IDLE_TICK_S,
) -> None:
    """Run one session until it is stopped and its input is drained, then tidy up.

    Without input the loop wakes every ``tick_s`` while the handler has a timer running
    (``tick_after_s``), acks are due or the session is draining, else every ``idle_tick_s``;
    a control event wakes it at once (the handler may have started a timer)."""
    js = ctx.nc.jetstream()
    name = input_consumer_name(ctx.stage, ctx.subjects)
    # Control is delivered on its own subscription and may interleave with input handling at
    # any await: a barge-in never waits behind queued audio.
    started = asyncio.Event()
    caught_up = asyncio.Event()
    backlog = await _control_backlog(js, ctx.subjects)
    replayed = 0
    if backlog == 0:
        caught_up.set()

    async def on_control(msg: Msg) -> None:
        nonlocal replayed
        replayed += 1
        if replayed >= backlog:
            caught_up.set()
        try:
            event = parse_control(msg.data)
        except MalformedEvent as exc:
            _reject(ctx, msg.subject, "malformed_control", exc)
            return
        if isinstance(event, SessionStarted):
            ctx.started = event
        if isinstance(event, SessionStopped):
            ctx.stopped = event
        await _guarded(ctx, handler.on_control(event), msg.subject)
        if ctx.started is not None:
            started.set()
        if psub is not None:
            psub.wake()

    psub: ContinuousPull | None = None
    control_sub = await follow(js, ctx.subjects.ctl(">"), CONTROL, on_control)
    try:
        try:
            # state is rebuilt from the control replay before any input is handled
            await asyncio.wait_for(asyncio.gather(started.wait(), caught_up.wait()),
                                   timeout=start_timeout_s)
        except TimeoutError:
            log.error("no session.started event; giving the session up", extra=ctx.log_extra())
            return
        psub = await open_input(js, input_stream, name, filter_subjects)
        acks = AckTracker(ctx.publisher)
        draining = False
        while True:
            wait_s = _wait_s(handler, tick_s, idle_tick_s, acks.pending or ctx.stopped is not None)
            waited = time.monotonic()
            msgs = await psub.next_batch(timeout=wait_s)
            stalled = time.monotonic() - waited - wait_s
            if ctx.stall_limit_s and stalled > ctx.stall_limit_s:  # frozen (SIGSTOP) meanwhile
                raise ClaimLost(f"the session's loop stalled for {stalled:.1f} s, longer than "
                                f"the claim's lease ({ctx.stall_limit_s:.0f} s)")
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                item = InputMessage(msg.subject, msg.data, dict(msg.headers or {}), seq)
                await _guarded(ctx, handler.on_message(item), msg.subject)
                acks.processed(seq, msg)
                _check_stored(ctx)
            await _guarded(ctx, handler.on_tick(), "tick")
            await acks.advance(handler.retain_from())
            _check_stored(ctx)
            if ctx.stopped is not None and not msgs and await _drained(js, input_stream, name):
                if draining:  # a second quiet look after the server said it delivered all
                    break
                draining = True
            else:
                draining = False
        await handler.close()
        try:
            await ctx.publisher.flush()
        except PublishError as exc:
            raise OutputNotStored(str(exc)) from exc
        await acks.advance(None)
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(input_stream, name)
        log.info("session finished", extra=ctx.log_extra(reason=ctx.stopped.reason if ctx.stopped else ""))
    except (OutputNotStored, NatsError, TimeoutError, ClaimLost):  # the caller decides
        # first shut the outbox: what a handler's close would say (an utterance cut short, a
        # turn's audio "cancelled: session ended") is not so: the session is served again,
        # here or by another replica, and a message stored now would take the de-duplication
        # id of the true one
        ctx.publisher.abandon()
        with contextlib.suppress(Exception):
            await _guarded(ctx, handler.close(), "close")  # frees its tasks; it cannot publish
        raise
    finally:
        with contextlib.suppress(Exception):
            await control_sub.unsubscribe()
        if psub is not None:
            with contextlib.suppress(Exception):
                await psub.stop()


def _wait_s(handler: SessionHandler, tick_s: float, idle_tick_s: float, busy: bool) -> float:
    after, cap = handler.tick_after_s(), tick_s if busy else idle_tick_s
    return cap if after is None else min(after, cap)


class OutputNotStored(PublishError):
    """An output of the session was not stored: serve it again from its ack floor."""


def _check_stored(ctx: SessionContext) -> None:
    failure = ctx.publisher.failure
    if failure is None:
        ctx.publisher.expire()
        failure = ctx.publisher.failure
    if failure is not None:
        raise OutputNotStored(str(failure))


AGAIN_AFTER_S = (0.1, 0.25, 0.5, 1.0, 2.0)
"""Pauses before serving a session again after a loss: the n-th time waits the n-th."""


async def serve_session_durably(
    new_context: Callable[[], SessionContext],
    new_handler: Callable[[SessionContext], SessionHandler],
    input_stream: str,
    filter_subjects: list[str],
    tick_s: float = 0.05,
) -> None:
    """``serve_session`` until it finishes; whenever an output was not stored or the bus
    failed under it, serve the session again from its ack floor with a fresh handler (the
    same replica keeps the claim, so nothing waits for a lease to run out)."""
    attempt = 0
    while True:
        ctx = new_context()
        try:
            await serve_session(ctx, new_handler(ctx), input_stream, filter_subjects, tick_s)
            return
        except (OutputNotStored, NatsError, TimeoutError) as exc:
            pause = AGAIN_AFTER_S[min(attempt, len(AGAIN_AFTER_S) - 1)]
            attempt += 1
            log.warning("serving the session again from its last stored point: %s",
                        str(exc) or type(exc).__name__,
                        extra=ctx.log_extra(attempt=attempt))
            await asyncio.sleep(pause)
            started = time.monotonic()
            while not ctx.nc.is_connected:  # no use trying before the broker is back
                await asyncio.sleep(0.05)
                if ctx.nc.is_closed:
                    raise
            if time.monotonic() - started > 1:
                attempt = 0  # an outage, not a session that keeps failing


async def _control_backlog(js: JetStreamContext, subjects: SessionSubjects) -> int:
    """How many control events the session has so far (the replay to wait for)."""
    info = await js.stream_info(CONTROL, subjects_filter=subjects.ctl(">"))
    return sum((info.state.subjects or {}).values())


async def _drained(js: JetStreamContext, stream: str, name: str) -> bool:
    info = await js.consumer_info(stream, name)
    return info.num_pending == 0


async def _guarded(ctx: SessionContext, call: object, subject: str) -> None:
    """Run a handler call; an unexpected error costs one message, never the session."""
    try:
        await call  # type: ignore[misc]
    except asyncio.CancelledError:
        raise
    except MalformedEvent as exc:
        _reject(ctx, subject, "malformed", exc)
    except PublishError:
        if ctx.publisher.failure is None:  # not this session's outbox: a handler's mistake
            log.exception("handler failed on %s", subject, extra=ctx.log_extra())
            _count(ctx, "handler_error")
        # else the outbox keeps the failure and the serve loop serves the session again
    except Exception:  # noqa: BLE001
        log.exception("handler failed on %s", subject, extra=ctx.log_extra())
        _count(ctx, "handler_error")


def _reject(ctx: SessionContext, subject: str, reason: str, exc: Exception) -> None:
    ctx.reject(reason, str(exc), subject)


def _count(ctx: SessionContext, reason: str) -> None:
    counter = ctx.metrics_rejected
    if counter is not None:
        counter.labels(stage=ctx.stage, reason=reason).inc()  # type: ignore[attr-defined]
