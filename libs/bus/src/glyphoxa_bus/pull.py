"""A continuous pull: messages are handed over the moment the server delivers them.

nats.py's ``PullSubscription.fetch(batch, timeout)`` returns early only when messages are
already waiting; on an idle consumer it sends a lingering request and, after the first
message arrives, keeps waiting for the rest of the batch until the timeout. Every quiet
moment then costs a hop up to the whole timeout (measured: p50 140 ms at 10 sessions).

Here one pull request for up to ``batch`` messages stays open on the server at all
times; its messages stream into our inbox as they are stored, and a new request goes
out when the previous one is used up or expires (the pattern of the newer NATS clients'
``consume()``).

Waiting costs one future and one timer: the inbox's callback queues what arrives and
wakes the waiter. (``Subscription.next_msg`` makes a uuid, a task and a ``wait_for`` per
call, and an idle session's loop calls it every tick: 20 idle sessions cost a stage about
twice the CPU that way, ``./task bench-bus-costs``.) ``wake()`` ends a wait early, for
work that arrives by another way (a control event with a timer of its own).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError

_DONE = {"404", "408", "409"}  # no messages / request expired / request ended (e.g. consumer gone)


class ContinuousPull:
    def __init__(self, nc: Client, stream: str, consumer: str, batch: int = 256,
                 expires_s: float = 5.0):
        self._nc, self._batch, self._expires_s = nc, batch, expires_s
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._left = 0  # messages the open request may still deliver
        self._deadline = 0.0
        self._arrived: deque[Msg] = deque()
        self._waiter: asyncio.Future[None] | None = None

    async def start(self) -> ContinuousPull:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg, pending_msgs_limit=-1,
                                             pending_bytes_limit=-1)
        await self._request()
        return self

    async def _on_msg(self, msg: Msg) -> None:
        self._arrived.append(msg)
        self.wake()

    def wake(self) -> None:
        """End a ``next_batch`` wait now (it returns what has arrived, maybe nothing)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _request(self) -> None:
        body = {"batch": self._batch, "expires": int(self._expires_s * 1e9)}
        await self._nc.publish(self._next, json.dumps(body).encode(), reply=self._inbox)
        self._left = self._batch
        self._deadline = time.monotonic() + self._expires_s + 1.0

    async def next_batch(self, timeout: float) -> list[Msg]:
        """Messages delivered so far (waits up to ``timeout`` for the first one, or until
        ``wake()``)."""
        assert self._sub is not None
        if self._nc.is_closed:
            raise ConnectionClosedError
        if not self._arrived and timeout > 0:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _settle, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        out: list[Msg] = []
        while self._arrived:
            self._take(self._arrived.popleft(), out)
        if self._left <= 0 or time.monotonic() > self._deadline:
            await self._request()  # used up, or lost (e.g. across a reconnect)
        return out

    def _take(self, msg: Msg, out: list[Msg]) -> None:
        status = (msg.headers or {}).get("Status")
        if status is None and msg.reply:
            out.append(msg)
            self._left -= 1
        elif status in _DONE:
            self._left = 0
        # 100 (idle heartbeat) and anything else: nothing to do

    async def stop(self) -> None:
        self.wake()
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
