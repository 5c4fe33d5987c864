"""Publishing usage events: ``glx.T.S.usage.<stage>``, one per unit of metered work.

The ``Nats-Msg-Id`` is ``usage:<tenant>.<session>:<metric>:<key>``: a replica that redoes
the work after a failover publishes the same id (stored once within the duplicate
window) and the same ``key`` (counted once by session-control after that).
"""

from __future__ import annotations

from typing import Protocol

from glyphoxa_events.models import Usage
from glyphoxa_events.subjects import SessionSubjects


class Sink(Protocol):
    """What publishes (a session's ``glyphoxa_bus.publisher.Outbox``, or a test's collector)."""

    async def publish(
        self, subject: str, data: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None: ...


def usage_msg_id(subjects: SessionSubjects, usage: Usage) -> str:
    return f"usage:{subjects.tenant}.{subjects.session}:{usage.metric}:{usage.key}"


async def publish_usage(sink: Sink, subjects: SessionSubjects, usage: Usage) -> None:
    """Publish one usage event; nothing is published for an amount of zero."""
    if usage.amount <= 0:
        return
    # A failed publish is the session's outbox's to handle (the work is redone), not ours.
    await sink.publish(subjects.usage(usage.stage), usage.to_bytes(), usage_msg_id(subjects, usage))
