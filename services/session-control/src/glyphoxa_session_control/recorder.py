"""What happened in a session, recorded from the streams into PostgreSQL: usage events,
turns, and the transcript of what players actually heard (player lines from ``ctl.turn``,
NPC lines from ``ctl.played``, which holds only the part played before any barge-in).

Two durable consumers; a message is acked only after its row is committed, and every insert
is idempotent, so a redelivery or a restart of session-control counts nothing twice and
loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from glyphoxa_bus.streams import CONTROL, EVENTS
from glyphoxa_events.models import MAX_EVENT_BYTES, Played, TurnEnded, Usage, parse_control
from glyphoxa_events.subjects import ROOT, parse_subject
from glyphoxa_events.tokens import InvalidToken
from glyphoxa_session_control.metrics import RECORDED

log = logging.getLogger("glyphoxa.session_control.recorder")

CONSUMERS = {
    "session-control-ctl": (CONTROL, [f"{ROOT}.*.*.ctl.turn", f"{ROOT}.*.*.ctl.played"]),
    "session-control-usage": (EVENTS, [f"{ROOT}.*.*.usage.>"]),
}


class Recorder:
    def __init__(self, nc: Client, pool: AsyncConnectionPool, batch: int = 64):
        self._js, self._pool, self._batch = nc.jetstream(), pool, batch

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for name, (stream, subjects) in CONSUMERS.items():
                await self._ensure(name, stream, subjects)
                group.create_task(self._consume(name, stream), name=name)

    async def _ensure(self, name: str, stream: str, subjects: list[str]) -> None:
        await self._js.add_consumer(stream, ConsumerConfig(
            durable_name=name, filter_subjects=subjects, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=30, max_deliver=-1, max_ack_pending=1000))

    async def _consume(self, name: str, stream: str) -> None:
        psub = await self._js.pull_subscribe_bind(name, stream=stream)
        try:
            while True:
                try:
                    msgs = await psub.fetch(self._batch, timeout=1.0)
                except (TimeoutError, NatsTimeoutError):
                    continue
                for msg in msgs:
                    await self._handle(msg)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        try:
            kind = await self.store(msg.subject, msg.data, msg.metadata.timestamp.timestamp())
        except (ValueError, ValidationError, InvalidToken) as exc:
            RECORDED.labels(kind="unknown", result="malformed").inc()
            log.warning("dropping malformed event on %s: %s", msg.subject[:120], str(exc)[:200])
            await msg.term()
            return
        except pg_errors.ForeignKeyViolation:
            RECORDED.labels(kind="unknown", result="unknown_session").inc()
            log.warning("dropping event of a session this deployment does not know: %s",
                        msg.subject[:120])
            await msg.term()
            return
        except Exception as exc:  # noqa: BLE001 - the database is away: try again later
            RECORDED.labels(kind="unknown", result="retry").inc()
            log.warning("recording %s failed, retrying: %s", msg.subject[:120], type(exc).__name__)
            await msg.nak(delay=2.0)
            return
        RECORDED.labels(kind=kind, result="stored").inc()
        await msg.ack()

    async def store(self, subject: str, data: bytes, stored_at_s: float) -> str:
        """Store one event; returns its kind. Raises ValueError on malformed input."""
        if len(data) > MAX_EVENT_BYTES:
            raise ValueError(f"event larger than {MAX_EVENT_BYTES} bytes")
        where = parse_subject(subject)
        tenant, sid = where.tenant, where.session
        if where.kind == "usage":
            await self._usage(tenant, sid, Usage.model_validate_json(data))
            return "usage"
        event = parse_control(data)
        if isinstance(event, TurnEnded):
            await self._turn(tenant, sid, event, int(stored_at_s * 1e9))
            return "turn"
        if isinstance(event, Played):
            await self._played(tenant, sid, event, int(stored_at_s * 1e9))
            return "played"
        raise ValueError(f"unexpected event type {event.type!r}")

    async def _usage(self, tenant: str, sid: str, usage: Usage) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO usage_events (tenant_id, session_id, metric, key, amount, provider, stage)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (tenant, sid, usage.metric, usage.key, usage.amount, usage.provider, usage.stage))

    async def _turn(self, tenant: str, sid: str, turn: TurnEnded, stored_ns: int) -> None:
        spoken_ns = turn.latency.speech_end_ns or stored_ns
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO turns (tenant_id, session_id, turn_id, speaker, npc, outcome, reason,"
                " transcript, latency, speech_end_ns) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (tenant, sid, turn.turn_id, turn.speaker, turn.npc, str(turn.outcome), turn.reason,
                 turn.transcript, Jsonb(turn.latency.model_dump()), turn.latency.speech_end_ns))
            if turn.transcript.strip():
                await self._line(conn, tenant, sid, turn.turn_id, "player", turn.speaker,
                                 turn.transcript, True, spoken_ns)

    async def _played(self, tenant: str, sid: str, played: Played, stored_ns: int) -> None:
        if not played.text_heard.strip():
            return  # cut off before a word was heard
        async with self._pool.connection() as conn:
            await self._line(conn, tenant, sid, played.turn_id, "npc", played.npc, played.text_heard,
                             played.complete, played.first_played_ns or stored_ns)

    @staticmethod
    async def _line(conn, tenant: str, sid: str, turn: str, role: str, speaker: str,  # type: ignore[no-untyped-def]
                    text: str, complete: bool, spoken_ns: int) -> None:
        await conn.execute(
            "INSERT INTO transcript_lines (tenant_id, session_id, turn_id, role, speaker, text,"
            " complete, spoken_ns) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (tenant, sid, turn, role, speaker, text, complete, spoken_ns))
