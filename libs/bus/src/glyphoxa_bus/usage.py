"""Publishing usage events: ``glx.T.S.usage.<stage>``, one per unit of metered work.

The ``Nats-Msg-Id`` is ``usage:<tenant>.<session>:<metric>:<key>``: a replica that redoes
the work after a failover publishes the same id (stored once within the duplicate
window) and the same ``key`` (counted once by session-control after that).
"""

from __future__ import annotations

import logging
from typing import Protocol

from glyphoxa_bus.publisher import PublishError
from glyphoxa_events.models import Usage
from glyphoxa_events.subjects import SessionSubjects

log = logging.getLogger(__name__)


class Sink(Protocol):
    """What publishes (``glyphoxa_bus.publisher.Publisher``, or a test's collector)."""

    async def publish(
        self, subject: str, data: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None: ...


def usage_msg_id(subjects: SessionSubjects, usage: Usage) -> str:
    return f"usage:{subjects.tenant}.{subjects.session}:{usage.metric}:{usage.key}"


async def publish_usage(sink: Sink, subjects: SessionSubjects, usage: Usage) -> None:
    """Publish one usage event; nothing is published for an amount of zero."""
    if usage.amount <= 0:
        return
    subject, msg_id = subjects.usage(usage.stage), usage_msg_id(subjects, usage)
    try:
        await sink.publish(subject, usage.to_bytes(), msg_id)
    except PublishError as exc:  # an earlier publish failed; this one was not sent yet
        log.warning("retrying usage publish after an earlier failure: %s", exc,
                    extra={"tenant": subjects.tenant, "session": subjects.session})
        await sink.publish(subject, usage.to_bytes(), msg_id)
