"""JetStream publishing with a bound on unacknowledged messages and de-duplication ids."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import TooManyStalledMsgsError

from glyphoxa_events import headers as H
from glyphoxa_events.models import Event

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    pass


class Publisher:
    """Publishes to JetStream keeping at most ``max_in_flight`` publishes unacknowledged.

    Each message is written to the connection before ``publish`` returns (so the stream
    stores messages in call order); acks are awaited in the background (nats.py's
    ``publish_async``: one shared reply subscription, no task per message). Every message
    carries ``Nats-Msg-Id`` so a retried or replayed publish is stored once. A failed
    publish surfaces at the next ``publish`` or at ``flush()``.
    """

    def __init__(self, nc: Client, max_in_flight: int = 256, ack_timeout_s: float = 5.0):
        self._js: JetStreamContext = nc.jetstream(timeout=ack_timeout_s,
                                                  publish_async_max_pending=max_in_flight)
        self._pending: set[asyncio.Future] = set()
        self._failure: BaseException | None = None
        self._timeout = ack_timeout_s

    async def publish(
        self, subject: str, data: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None:
        self._raise_failure()
        hdrs = dict(headers or {})
        hdrs[H.MSG_ID] = msg_id
        try:
            future = await self._js.publish_async(subject, data, headers=hdrs,
                                                  wait_stall=self._timeout)
        except TooManyStalledMsgsError:
            raise PublishError(f"{len(self._pending)} publishes unacknowledged for "
                               f"{self._timeout:.0f} s: is JetStream down?") from None
        self._pending.add(future)
        future.add_done_callback(self._on_ack)

    async def publish_event(self, subject: str, event: Event, msg_id: str) -> None:
        await self.publish(subject, event.to_bytes(), msg_id)

    def _on_ack(self, future: asyncio.Future) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.error("publish failed: %s", exc)
            self._failure = exc

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise PublishError(f"an earlier publish failed: {failure}") from failure

    async def flush(self) -> None:
        """Wait until every publish so far is acknowledged; raise the first failure."""
        if self._pending:
            _, late = await asyncio.wait(set(self._pending), timeout=self._timeout)
            if late:
                raise PublishError(f"{len(late)} publishes not acknowledged within "
                                   f"{self._timeout:.0f} s")
        self._raise_failure()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

