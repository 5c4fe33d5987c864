"""JetStream publishing with a bound on unacknowledged messages and de-duplication ids."""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.client import Client
from nats.js import JetStreamContext

from glyphoxa_events import headers as H
from glyphoxa_events.models import Event

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    pass


class Publisher:
    """Publishes to JetStream keeping at most ``max_in_flight`` publishes unacknowledged.

    Messages go out on the wire in call order (so the stream stores them in that order);
    only the waiting for acks overlaps. Every message carries ``Nats-Msg-Id`` so a retried
    or replayed publish is stored once. ``flush()`` waits for every ack and raises the first
    failure.
    """

    def __init__(self, nc: Client, max_in_flight: int = 256, ack_timeout_s: float = 5.0):
        self._js: JetStreamContext = nc.jetstream(timeout=ack_timeout_s)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._timeout = ack_timeout_s

    async def publish(
        self, subject: str, data: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise PublishError(f"an earlier publish failed: {failure}") from failure
        hdrs = dict(headers or {})
        hdrs[H.MSG_ID] = msg_id
        await self._slots.acquire()
        # js.publish writes the message to the client's buffer before its first suspension,
        # and tasks start in creation order, so wire order equals call order.
        task = asyncio.create_task(self._publish(subject, data, hdrs))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.sleep(0)  # let the task put the message on the wire before returning

    async def publish_event(self, subject: str, event: Event, msg_id: str) -> None:
        await self.publish(subject, event.to_bytes(), msg_id)

    async def _publish(self, subject: str, data: bytes, hdrs: dict[str, str]) -> None:
        try:
            await self._js.publish(subject, data, timeout=self._timeout, headers=hdrs)
        except Exception as exc:  # noqa: BLE001 - surfaced through flush()/next publish
            log.error("publish to %s failed: %s", subject, exc)
            self._failure = exc
        finally:
            self._slots.release()

    async def flush(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise PublishError(str(failure)) from failure

    @property
    def in_flight(self) -> int:
        return len(self._pending)


def now_ns() -> int:
    return time.time_ns()
