"""JetStream publishing with a bound on unacknowledged messages and de-duplication ids.

A process shares one ``Publisher`` (one bound, one reply subscription); each session of a
stage publishes through its own ``Outbox`` on top of it, so a session learns of its own
lost publishes, never of another session's, and knows which of its publishes are stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import TooManyStalledMsgsError

from glyphoxa_bus.counted import worth_logging
from glyphoxa_events import headers as H
from glyphoxa_events.models import Event

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    pass


async def hand_over() -> None:
    """Let nats.py write out what was just published before the caller goes on.

    A publish only queues the message for the connection's flusher task, which runs at the
    caller's next real wait. A message on the turn's path (a final transcript, a reply's
    first sentence) followed by more work without such a wait would leave with all of it:
    a cloud LLM's stream chunk often holds several sentences, and the first would wait while
    the rest are cleaned, checked and published. One turn of the event loop: the flusher is
    already scheduled, so it writes before this returns."""
    await asyncio.sleep(0)


class Publisher:
    """Publishes to JetStream keeping at most ``max_in_flight`` publishes unacknowledged.

    Each message is queued on the connection before ``publish`` returns (so the stream
    stores messages in call order; nats.py's flusher writes it at the caller's next wait,
    ``hand_over`` asks for it at once); acks are awaited in the background (nats.py's
    ``publish_async``: one shared reply subscription, no task per message). Every message
    carries ``Nats-Msg-Id`` so a retried or replayed publish is stored once.

    ``publish`` returns the ack's future. nats.py never gives up on an ack that does not
    come (the broker died with the message in flight): a publish unacknowledged for
    ``ack_timeout_s`` is cancelled here, which frees its slot and counts as failed.
    ``flush()`` raises the first failure since the last ``flush()``.

    nats.py takes a slot with ``asyncio.wait_for(semaphore.acquire(), wait_stall)``: on
    Python 3.11 that is a task and two turns of the event loop on every publish, in which
    every other ready task (other sessions' replies) takes a step. While fewer than
    ``max_in_flight`` are unacknowledged a slot is free, so the wait is asked for without a
    timeout (the semaphore is taken at once); only at the bound does it wait, up to
    ``ack_timeout_s``.
    """

    def __init__(self, nc: Client, max_in_flight: int = 256, ack_timeout_s: float = 5.0):
        self._js: JetStreamContext = nc.jetstream(timeout=ack_timeout_s,
                                                  publish_async_max_pending=max_in_flight)
        self._pending: deque[tuple[float, asyncio.Future]] = deque()  # in publish order
        self._failure: BaseException | None = None
        self._max_in_flight = max_in_flight
        self._unacked = 0  # >= nats.py's taken slots: it frees a slot before we count it
        self.timeout_s = ack_timeout_s
        self.failures = 0

    async def publish(
        self, subject: str, data: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> asyncio.Future:
        self.expire()
        hdrs = dict(headers or {})
        hdrs[H.MSG_ID] = msg_id
        free = self._unacked < self._max_in_flight
        try:
            future = await self._js.publish_async(subject, data, headers=hdrs,
                                                  wait_stall=None if free else self.timeout_s)
        except TooManyStalledMsgsError:
            raise PublishError(f"{self.in_flight} publishes unacknowledged for "
                               f"{self.timeout_s:.0f} s: is JetStream down?") from None
        except NatsError as exc:  # e.g. the reconnect buffer is full
            raise PublishError(f"publish not sent: {exc!r}") from exc
        self._unacked += 1
        future.add_done_callback(self._on_ack)
        self._pending.append((time.monotonic(), future))
        return future

    async def publish_event(self, subject: str, event: Event, msg_id: str) -> asyncio.Future:
        return await self.publish(subject, event.to_bytes(), msg_id)

    def expire(self) -> None:
        """Give up on publishes unacknowledged for longer than the ack timeout."""
        deadline = time.monotonic() - self.timeout_s
        pending = self._pending
        while pending and (pending[0][1].done() or pending[0][0] < deadline):
            _, future = pending.popleft()
            future.cancel()  # no-op when done; releases nats.py's slot otherwise

    def _on_ack(self, future: asyncio.Future) -> None:
        self._unacked -= 1
        failure = ack_failure(future, self.timeout_s)
        if failure is not None:
            self.failures += 1
            if worth_logging(self.failures):
                log.error("publish failed: %s", failure, extra={"failed_so_far": self.failures})
            if self._failure is None:
                self._failure = failure

    async def flush(self) -> None:
        """Wait until every publish so far is acknowledged; raise the first failure."""
        waiting = {f for _, f in self._pending if not f.done()}
        if waiting:
            await asyncio.wait(waiting, timeout=self.timeout_s)
            for future in waiting:
                future.cancel()  # still unacknowledged: failed
            await asyncio.sleep(0)  # let the done callbacks record the failures
        self.expire()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise PublishError(f"an earlier publish failed: {failure}") from failure

    @property
    def in_flight(self) -> int:
        return sum(1 for _, f in self._pending if not f.done())


def ack_failure(future: asyncio.Future, timeout_s: float) -> PublishError | None:
    """Why a publish's ack future says the message was not stored, or None if it was."""
    if future.cancelled():
        return PublishError(f"not acknowledged by JetStream within {timeout_s:g} s")
    exc = future.exception()
    if exc is not None:
        return PublishError(f"refused by JetStream: {exc!r}")
    return None


class Outbox:
    """One session's publishes, through the process's shared ``Publisher``.

    It counts what it published (``issued``) and knows the longest prefix of that already
    stored by JetStream (``stored_through()``), so the session acks an input only once the
    outputs it caused are stored. Its first failure sticks (``failure``): every later
    publish raises it, and the session is served again from its last stored point
    (``glyphoxa_bus.session``). Another session's failures never show here.
    """

    def __init__(self, publisher: Publisher):
        self._publisher = publisher
        self._pending: dict[int, asyncio.Future] = {}  # publish order
        self.issued = 0
        self.failure: PublishError | None = None

    @property
    def timeout_s(self) -> float:
        return self._publisher.timeout_s

    async def publish(
        self, subject: str, data: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None:
        if self.failure is not None:
            raise PublishError(f"an earlier publish of this session failed: {self.failure}")
        try:
            future = await self._publisher.publish(subject, data, msg_id, headers)
        except PublishError as exc:
            self._fail(exc)
            raise
        self.issued += 1
        number = self.issued
        self._pending[number] = future
        future.add_done_callback(lambda f: self._settled(number, f))

    async def publish_event(self, subject: str, event: Event, msg_id: str) -> None:
        await self.publish(subject, event.to_bytes(), msg_id)

    def _settled(self, number: int, future: asyncio.Future) -> None:
        self._pending.pop(number, None)
        failure = ack_failure(future, self.timeout_s)
        if failure is not None:
            self._fail(failure)

    def _fail(self, failure: PublishError) -> None:
        if self.failure is None:
            self.failure = failure

    def expire(self) -> None:
        """Give up on overdue acks (the shared ``Publisher`` cancels them; the cancellation
        reaches ``_settled`` as this session's failure, and until then the cancelled
        publish is still pending, so nothing after it counts as stored)."""
        self._publisher.expire()

    def stored_through(self) -> int:
        """The highest n such that this session's publishes 1..n are all stored."""
        self.expire()
        if self.failure is not None:
            return 0  # nothing more is known for sure; the session will be served again
        return next(iter(self._pending)) - 1 if self._pending else self.issued

    def abandon(self) -> None:
        """The session is being served again (or given up): every later publish raises, and
        the acks still due are not waited for."""
        self._fail(PublishError("this serving of the session was given up"))
        for future in list(self._pending.values()):
            future.cancel()

    async def flush(self) -> None:
        """Wait until this session's publishes are stored; raise if one was not."""
        waiting = set(self._pending.values())
        if waiting:
            await asyncio.wait(waiting, timeout=self.timeout_s)
            self.expire()
        if self.failure is not None:
            raise PublishError(f"a publish of this session failed: {self.failure}")


@dataclass
class _Kept:
    subject: str
    data: bytes
    msg_id: str
    headers: dict[str, str] | None
    future: asyncio.Future | None = None  # None: not sent (since the broker went away)
    tries: int = 0


class Resender:
    """An edge's publishes (players' audio and its events), kept until JetStream stored them.

    An edge cannot redo its input: a frame lost is a player's words lost. When the broker
    goes away, what was sent but not yet acknowledged may be lost with it (it sat in the
    dead server's socket), so every unacknowledged message is kept, new ones are held back
    (not left to the client's reconnect buffer, which would send them first), and once the
    broker answers again all of them are published again in their order with their ids
    and original headers (capture times): JetStream stores each id once, so nothing is
    doubled and the stream keeps the order players spoke in. At most ``limit`` messages
    are kept (2,000 frames: 8 s of 5 players talking at once); beyond that the oldest are
    dropped and counted (``dropped``). A message JetStream itself refuses is tried
    ``MAX_TRIES`` times, then dropped and counted.
    """

    MAX_TRIES = 3

    def __init__(self, publisher: Publisher, nc: Client, limit: int = 2000,
                 on_drop: Callable[[int], None] | None = None):
        self._publisher, self._nc, self._limit = publisher, nc, limit
        self._kept: deque[_Kept] = deque()
        self._held = False  # the broker went away: send nothing until it is back
        self._on_drop = on_drop or (lambda n: None)
        self.dropped = 0
        self.resent = 0
        previous = nc._disconnected_cb

        async def on_disconnect() -> None:
            self._recall()
            if previous is not None:
                await previous()

        nc._disconnected_cb = on_disconnect
        self._callbacks = (previous, on_disconnect)

    def close(self) -> None:
        """Stop watching the connection (a resender made for one scene, say)."""
        previous, ours = self._callbacks
        if self._nc._disconnected_cb is ours:
            self._nc._disconnected_cb = previous

    async def publish(
        self, subject: str, data: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None:
        self._settle()
        if len(self._kept) >= self._limit:
            self._drop(self._kept.popleft(), "more than the bound kept while the broker is away")
        kept = _Kept(subject, data, msg_id, headers)
        self._kept.append(kept)
        if not self._nc.is_connected:
            self._held = True
        if self._held:
            await self._resend()
        else:
            await self._send(kept)

    async def publish_event(self, subject: str, event: Event, msg_id: str) -> None:
        await self.publish(subject, event.to_bytes(), msg_id)

    async def flush(self, timeout_s: float = 30.0) -> None:
        """Wait (up to ``timeout_s``) until everything kept is stored; raise if it is not."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._settle()
            if self._held or any(k.future is not None and k.future.done() for k in self._kept):
                await self._resend()
            if not self._kept:
                return
            if time.monotonic() > deadline:
                raise PublishError(f"{len(self._kept)} messages not stored within "
                                   f"{timeout_s:.0f} s (is JetStream down?)")
            waiting = {k.future for k in self._kept if k.future is not None and not k.future.done()}
            if waiting:
                await asyncio.wait(waiting, timeout=0.2)
            else:
                await asyncio.sleep(0.05)

    @property
    def kept(self) -> int:
        return len(self._kept)

    async def _send(self, kept: _Kept) -> None:
        kept.tries += 1
        try:
            kept.future = await self._publisher.publish(kept.subject, kept.data, kept.msg_id,
                                                        kept.headers)
        except PublishError:  # stalled: the broker is not answering
            kept.future = None
            self._held = True

    def _settle(self) -> None:
        """Let go of what is stored (in order); note what was lost."""
        self._publisher.expire()
        while self._kept:
            kept = self._kept[0]
            future = kept.future
            if future is None or not future.done():
                break
            if ack_failure(future, self._publisher.timeout_s) is None:
                self._kept.popleft()
                continue
            if self._nc.is_connected and kept.tries >= self.MAX_TRIES:
                self._kept.popleft()  # JetStream keeps refusing it: give up on this one
                self._drop(kept, f"refused {kept.tries} times")
                continue
            self._held = True  # lost: send it and all after it again, in order
            break
        if not self._nc.is_connected:
            self._held = True

    async def _resend(self) -> None:
        if not self._nc.is_connected:
            return
        self._held = False
        for kept in self._kept:
            if kept.future is not None and kept.future.done() \
                    and ack_failure(kept.future, self._publisher.timeout_s) is None:
                continue  # stored already
            if kept.future is not None and not kept.future.done():
                kept.future.cancel()  # unacknowledged since before the outage: send again
            if kept.future is not None or kept.tries:
                self.resent += 1
            await self._send(kept)
            if self._held:  # the broker went away again
                return

    def _recall(self) -> None:
        """The connection broke: take our unsent messages back out of the client's reconnect
        buffer (nats.py would send them first on reconnect, ahead of the ones the dead server
        swallowed, and the stream would store players' frames out of order); they are all
        kept here and go out again in order."""
        self._held = True
        ids = {f"{H.MSG_ID}: {k.msg_id}\r\n".encode() for k in self._kept}
        pending = self._nc._pending
        if not ids or not pending:
            return
        keep = [cmd for cmd in pending if not _carries(cmd, ids)]
        self._nc._pending = keep
        self._nc._pending_data_size = sum(len(cmd) for cmd in keep)

    def _drop(self, kept: _Kept, why: str) -> None:
        self.dropped += 1
        self._on_drop(1)
        if worth_logging(self.dropped):
            log.warning("dropped a message to publish: %s", why,
                        extra={"subject": kept.subject[:200], "dropped_so_far": self.dropped})


def _carries(cmd: bytes, ids: set[bytes]) -> bool:
    """Whether a client command is the publish of one of ``ids`` (an HPUB with its header)."""
    if not cmd.startswith(b"HPUB "):
        return False
    head = bytes(cmd[:1024])
    return any(i in head for i in ids)
