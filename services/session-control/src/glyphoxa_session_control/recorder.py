"""What happened in a session, recorded from the streams into PostgreSQL: usage events,
turns, the transcript of what players actually heard (player lines from ``ctl.turn``,
NPC lines from ``ctl.played``, which holds only the part played before any barge-in), and
the campaign memory of each heard exchange (``memory.record_exchange``: the player's line and
the NPC's reply as far as it was heard, with the NPCs that witnessed it).

Two durable consumers; each fetched batch is written in one transaction and its messages
are acked only after the commit. Every insert is idempotent, so a redelivery or a restart of
session-control counts nothing twice and loses nothing. An event that can never be stored is
parked in ``parked_events`` (with why) and acked, never retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from psycopg import AsyncConnection
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ValidationError

from glyphoxa_bus.counted import worth_logging
from glyphoxa_bus.streams import CONTROL, EVENTS
from glyphoxa_events.models import MAX_EVENT_BYTES, Outcome, Played, TurnEnded, Usage, parse_control
from glyphoxa_events.subjects import ROOT, parse_subject
from glyphoxa_events.tokens import InvalidToken
from glyphoxa_session_control.memory import SessionCampaigns, record_exchange
from glyphoxa_session_control.metrics import RECORDED

log = logging.getLogger("glyphoxa.session_control.recorder")

# A batch is written in milliseconds; what a crashed session-control had fetched but not
# acked is redelivered to the next one after this long (a slow write delivered twice is
# stored once: every insert is idempotent).
ACK_WAIT_S = 5.0

CONSUMERS = {
    "session-control-ctl": (CONTROL, [f"{ROOT}.*.*.ctl.turn", f"{ROOT}.*.*.ctl.played"]),
    "session-control-usage": (EVENTS, [f"{ROOT}.*.*.usage.>"]),
}


class Recorder:
    def __init__(self, nc: Client, pool: AsyncConnectionPool, batch: int = 64):
        self._js, self._pool, self._batch = nc.jetstream(), pool, batch
        self._parked = 0
        self._campaigns = SessionCampaigns()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for name, (stream, subjects) in CONSUMERS.items():
                await self._ensure(name, stream, subjects)
                group.create_task(self._consume(name, stream), name=name)

    async def _ensure(self, name: str, stream: str, subjects: list[str]) -> None:
        await self._js.add_consumer(stream, ConsumerConfig(
            durable_name=name, filter_subjects=subjects, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=ACK_WAIT_S, max_deliver=-1,
            max_ack_pending=1000))

    async def _consume(self, name: str, stream: str) -> None:
        psub = await self._js.pull_subscribe_bind(name, stream=stream)
        try:
            while True:
                try:
                    msgs = await psub.fetch(self._batch, timeout=1.0)
                except (TimeoutError, NatsTimeoutError):
                    continue
                await self._handle(msgs)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _handle(self, msgs: list[Msg]) -> None:
        """One transaction (one commit) per fetched batch. A batch the database refuses is
        written again one by one, so that one event that can never be stored (malformed, of
        an unknown session, refused by PostgreSQL) is parked and acked alone and everything
        else is recorded: the recorder always moves on. Only an unreachable database makes
        it retry."""
        records: list[tuple[Msg, Record]] = []
        for msg in msgs:
            try:
                records.append((msg, parse(msg.subject, msg.data, msg.metadata.timestamp.timestamp())))
            except (ValueError, ValidationError, InvalidToken) as exc:
                await self._park(msg, "malformed", f"malformed: {exc}")
        if not records:
            return
        try:
            await self._write(records)
        except (pg_errors.IntegrityError, pg_errors.DataError) as exc:
            if len(records) == 1:
                await self._refused(records[0][0], exc)
                return
            for one in records:
                await self._handle_one(one)
            return
        except Exception as exc:  # noqa: BLE001 - the database is away: try again later
            await self._retry(records, exc)
            return
        for msg, record in records:
            RECORDED.labels(kind=record.kind, result="stored").inc()
            await msg.ack()

    async def _handle_one(self, one: tuple[Msg, Record]) -> None:
        try:
            await self._write([one])
        except (pg_errors.IntegrityError, pg_errors.DataError) as exc:
            await self._refused(one[0], exc)
            return
        except Exception as exc:  # noqa: BLE001
            await self._retry([one], exc)
            return
        RECORDED.labels(kind=one[1].kind, result="stored").inc()
        await one[0].ack()

    async def _refused(self, msg: Msg, exc: Exception) -> None:
        if isinstance(exc, pg_errors.ForeignKeyViolation):
            await self._park(msg, "unknown_session", "a session this deployment does not know")
        else:
            await self._park(msg, "refused", f"the database refused it ({type(exc).__name__})")

    async def _park(self, msg: Msg, result: str, reason: str) -> None:
        """Keep an event that can never be stored in ``parked_events`` with its reason, then
        ack it. Logged with its stream and sequence, the first ``LOGGED_FIRST`` and then
        every 100th (a flood of bad events must not flood the log). If the database is away,
        the event is retried like any other."""
        meta = msg.metadata
        stream, seq = meta.stream, meta.sequence.stream
        subject = _storable(msg.subject)[:300]  # a subject may hold a NUL, which text may not
        reason = _storable(reason)[:500]
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO parked_events (stream, stream_seq, subject, reason, data)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (stream, seq, subject, reason, msg.data))
        except Exception as exc:  # noqa: BLE001 - the database is away: park it later
            log.warning("parking an event failed, retrying: %s", type(exc).__name__)
            RECORDED.labels(kind="unknown", result="retry").inc()
            await msg.nak(delay=2.0)
            return
        RECORDED.labels(kind="unknown", result=result).inc()
        self._parked += 1
        if worth_logging(self._parked):
            log.warning("parked an event that cannot be recorded", extra={
                "stream": stream, "stream_seq": seq, "subject": subject[:120], "reason": reason,
                "parked_so_far": self._parked})
        await msg.ack()

    @staticmethod
    async def _retry(records: list[tuple[Msg, Record]], exc: Exception) -> None:
        log.warning("recording %d event(s) failed, retrying: %s", len(records), type(exc).__name__)
        for msg, _ in records:
            RECORDED.labels(kind="unknown", result="retry").inc()
            await msg.nak(delay=2.0)

    async def _write(self, records: list[tuple[Msg, Record]]) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            for _, record in records:
                await _WRITERS[record.kind](conn, record, self._campaigns)


def _storable(text: str) -> str:
    """``text`` as PostgreSQL's text takes it (no NUL)."""
    return text.replace("\x00", "\\0")


@dataclass(frozen=True)
class Record:
    kind: str
    tenant: str
    session: str
    event: Usage | TurnEnded | Played
    stored_ns: int


def parse(subject: str, data: bytes, stored_at_s: float) -> Record:
    """The event of one message; raises ValueError when it is malformed."""
    if len(data) > MAX_EVENT_BYTES:
        raise ValueError(f"event larger than {MAX_EVENT_BYTES} bytes")
    where = parse_subject(subject)
    stored_ns = int(stored_at_s * 1e9)
    if where.kind == "usage":
        return Record("usage", where.tenant, where.session, Usage.model_validate_json(data, strict=True), stored_ns)
    event = parse_control(data)
    if isinstance(event, TurnEnded):
        return Record("turn", where.tenant, where.session, event, stored_ns)
    if isinstance(event, Played):
        return Record("played", where.tenant, where.session, event, stored_ns)
    raise ValueError(f"unexpected event type {event.type!r}")


async def _usage(conn: AsyncConnection, r: Record, campaigns: SessionCampaigns) -> None:
    usage = r.event
    assert isinstance(usage, Usage)
    await conn.execute(
        "INSERT INTO usage_events (tenant_id, session_id, metric, key, amount, provider, stage)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (r.tenant, r.session, usage.metric, usage.key, usage.amount, usage.provider, usage.stage))


async def _turn(conn: AsyncConnection, r: Record, campaigns: SessionCampaigns) -> None:
    turn = r.event
    assert isinstance(turn, TurnEnded)
    await conn.execute(
        "INSERT INTO turns (tenant_id, session_id, turn_id, speaker, npc, outcome, reason,"
        " transcript, latency, speech_end_ns, llm_provider, routing, failure, memories)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (r.tenant, r.session, turn.turn_id, turn.speaker, turn.npc, str(turn.outcome), turn.reason,
         turn.transcript, Jsonb(turn.latency.model_dump()), turn.latency.speech_end_ns,
         turn.llm_provider, _jsonb(turn.routing), _jsonb(turn.failure), list(turn.memories)))
    if turn.transcript.strip():
        await _line(conn, r, turn.turn_id, "player", turn.speaker, turn.transcript, True,
                    turn.latency.speech_end_ns or r.stored_ns)
    await _remember_turn(conn, r, turn, campaigns)


def _jsonb(part: BaseModel | None) -> Jsonb | None:
    return None if part is None else Jsonb(part.model_dump(mode="json", exclude_none=True))


async def _played(conn: AsyncConnection, r: Record, campaigns: SessionCampaigns) -> None:
    played = r.event
    assert isinstance(played, Played)
    if played.text_heard.strip():  # else cut off before a word was heard
        await _line(conn, r, played.turn_id, "npc", played.npc, played.text_heard, played.complete,
                    played.first_played_ns or r.stored_ns)
    await _remember_played(conn, r, played, campaigns)


# A turn addressed to an NPC; of these an answered one is remembered at once (its reply as
# generated, until ctl.played says how much was heard), the others once something was heard.
_ADDRESSED = frozenset({Outcome.answered, Outcome.cancelled, Outcome.failed, Outcome.timed_out})


async def _remember_turn(conn: AsyncConnection, r: Record, turn: TurnEnded,
                         campaigns: SessionCampaigns) -> None:
    if turn.npc is None or turn.outcome not in _ADDRESSED or not turn.transcript.strip():
        return
    found = await campaigns.of(conn, r.tenant, r.session)
    if found is None:
        return  # an unknown session: the turn's own insert has refused it already
    cid, campaign = found
    answered = turn.outcome == Outcome.answered
    await record_exchange(
        conn, r.tenant, r.session, turn.turn_id, turn.npc, campaign_id=cid, campaign=campaign,
        at=_at(r), speaker=turn.speaker, player_text=turn.transcript,
        npc_text=turn.reply_text if answered else "", create=answered)


async def _remember_played(conn: AsyncConnection, r: Record, played: Played,
                           campaigns: SessionCampaigns) -> None:
    if played.complete and not played.text_heard.strip():
        return  # heard to the end but the edge never learnt the text: the reply stands
    found = await campaigns.of(conn, r.tenant, r.session)
    if found is None:
        return
    cid, campaign = found
    cur = await conn.execute(  # the player's line, when its turn was recorded before
        "SELECT speaker, transcript, outcome FROM turns WHERE tenant_id = %s AND session_id = %s"
        " AND turn_id = %s", (r.tenant, r.session, played.turn_id))
    turn = await cur.fetchone()
    addressed = turn is not None and turn["outcome"] in _ADDRESSED
    await record_exchange(
        conn, r.tenant, r.session, played.turn_id, played.npc, campaign_id=cid, campaign=campaign,
        at=_at(r), speaker=turn["speaker"] if addressed else None,
        player_text=turn["transcript"] if addressed else "", npc_text=played.text_heard.strip(),
        heard=True)


def _at(r: Record) -> datetime:
    return datetime.fromtimestamp(r.stored_ns / 1e9, UTC)


async def _line(conn: AsyncConnection, r: Record, turn: str, role: str, speaker: str, text: str,
                complete: bool, spoken_ns: int) -> None:
    await conn.execute(
        "INSERT INTO transcript_lines (tenant_id, session_id, turn_id, role, speaker, text,"
        " complete, spoken_ns) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (r.tenant, r.session, turn, role, speaker, text, complete, spoken_ns))


_WRITERS = {"usage": _usage, "turn": _turn, "played": _played}
