"""Session claims: how a stage's replicas share sessions (ARCHITECTURE.md, "session claims").

session-control publishes one claim per stage and session to the work stream. Each
replica fetches a claim only when it has capacity and holds it with in-progress acks (the
lease). When the session ends the claim is acked; when the replica dies the lease runs
out and another replica gets the claim; on SIGTERM the replica naks its claims so another
takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

from glyphoxa_bus.counted import LOGGED_FIRST, worth_logging
from glyphoxa_bus.streams import WORK, claims_consumer_name, ensure_claims_consumer
from glyphoxa_events.subjects import SessionSubjects, claim_subject, parse_claim_subject

log = logging.getLogger(__name__)

SessionRunner = Callable[[SessionSubjects], Awaitable[None]]

LOGGED_MALFORMED = LOGGED_FIRST
"""Malformed claims logged one by one; after that only every 100th (as stages log rejections)."""


CLAIM_RESULTS = ("taken", "done", "failed", "lost", "handed_back")
"""What becomes of a claim: taken (this replica serves the session), done (the session ended,
acked), failed (the runner failed; handed back after 1 s), lost (a stall longer than the
lease; given up unacked), handed_back (SIGTERM)."""


class ClaimLost(RuntimeError):
    """This replica stalled (SIGSTOP, swapped out, starved) for longer than its claims' lease:
    the session may be another replica's by now, so it stops serving it without acking."""


@dataclass
class HeldClaim:
    msg: Msg
    subjects: SessionSubjects
    task: asyncio.Task[None]


class ClaimWorker:
    """Fetches and holds claims for one stage, running ``runner`` for each claimed session."""

    def __init__(
        self,
        nc: Client,
        stage: str,
        runner: SessionRunner,
        capacity: int = 8,
        lease_s: float = 10.0,
        on_change: Callable[[int], None] | None = None,
        rejected: object | None = None,
        on_claim: Callable[[str], None] | None = None,
    ):
        """``rejected``: the stage's ``glyphoxa_<service>_rejected_messages_total`` counter
        (labels stage, reason), which counts malformed claims as ``malformed_claim``.
        ``on_claim(result)`` is told what became of each claim (:data:`CLAIM_RESULTS`)."""
        self._nc = nc
        self._js = nc.jetstream()
        self.stage = stage
        self._runner = runner
        self._capacity = capacity
        self._lease_s = lease_s
        self._held: dict[str, HeldClaim] = {}
        self._stopping = asyncio.Event()
        self._loop_done = asyncio.Event()
        self._on_change = on_change or (lambda n: None)
        self._rejected = rejected
        self._on_claim = on_claim or (lambda result: None)
        self.malformed = 0

    @property
    def sessions(self) -> list[SessionSubjects]:
        return [h.subjects for h in self._held.values()]

    async def run(self) -> None:
        await ensure_claims_consumer(self._js, self.stage, self._lease_s)
        psub = await self._js.pull_subscribe_bind(claims_consumer_name(self.stage), stream=WORK)
        keepalive = asyncio.create_task(self._keep_leases(), name=f"{self.stage}-leases")
        try:
            while not self._stopping.is_set():
                if len(self._held) >= self._capacity:
                    await asyncio.sleep(0.1)
                    continue
                try:
                    msgs = await psub.fetch(1, timeout=0.5)
                except (TimeoutError, NatsTimeoutError):
                    continue
                for msg in msgs:
                    await self._take(msg)
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            await _nak_buffered(psub)
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
            self._loop_done.set()

    async def _take(self, msg: Msg) -> None:
        if self._stopping.is_set():  # a pull request still open at shutdown: hand it on
            await msg.nak()
            return
        try:
            _, tenant, session = parse_claim_subject(msg.subject)
            subjects = SessionSubjects(tenant, session)
        except ValueError as exc:
            self._malformed(msg.subject, exc)
            await msg.term()
            return
        if msg.subject in self._held:  # redelivered while we still hold it
            await msg.in_progress()
            return
        log.info(
            "claimed session",
            extra={"tenant": tenant, "session": session, "stage": self.stage,
                   "delivery": msg.metadata.num_delivered},
        )
        task = asyncio.create_task(self._serve(msg.subject, subjects), name=f"{self.stage}-{session}")
        self._held[msg.subject] = HeldClaim(msg, subjects, task)
        self._on_claim("taken")
        self._on_change(len(self._held))

    def _malformed(self, subject: str, exc: ValueError) -> None:
        """Anyone who may publish on the work stream can send a flood of these: each is
        counted, and only some are logged."""
        self.malformed += 1
        if self._rejected is not None:
            self._rejected.labels(stage=self.stage, reason="malformed_claim").inc()  # type: ignore[attr-defined]
        if worth_logging(self.malformed):
            log.warning("dropping malformed claim %s: %s", subject[:200], exc,
                        extra={"stage": self.stage, "malformed_so_far": self.malformed})

    async def _serve(self, key: str, subjects: SessionSubjects) -> None:
        try:
            await self._runner(subjects)
        except asyncio.CancelledError:
            raise
        except ClaimLost as exc:
            log.warning("giving the session up: %s", exc,
                        extra={"tenant": subjects.tenant, "session": subjects.session})
            await self._let_go(key)
            return
        except Exception:  # noqa: BLE001
            log.exception("session runner failed; handing the claim back",
                          extra={"tenant": subjects.tenant, "session": subjects.session})
            held = self._held.pop(key, None)
            if held:
                self._on_claim("failed")
                with contextlib.suppress(Exception):
                    await held.msg.nak(delay=1.0)
            self._on_change(len(self._held))
            return
        held = self._held.pop(key, None)
        if held:
            await held.msg.ack()
            self._on_claim("done")
        self._on_change(len(self._held))

    async def _let_go(self, key: str) -> None:
        """Stop holding a claim without acking it; the nak hands it on at once if it is still
        ours (a nak of a delivery the server already gave to another replica does nothing)."""
        held = self._held.pop(key, None)
        if held is not None:
            self._on_claim("lost")
            with contextlib.suppress(Exception):
                await held.msg.nak()
        self._on_change(len(self._held))

    async def _keep_leases(self) -> None:
        interval = max(self._lease_s / 3, 0.2)
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            stalled = time.monotonic() - last
            last = time.monotonic()
            if stalled > self._lease_s:  # our leases ran out meanwhile: the claims may be gone
                log.warning("this replica stalled for %.1f s, longer than its claims' lease "
                            "(%.0f s): giving up its %d sessions (another replica may hold "
                            "them now)", stalled, self._lease_s, len(self._held))
                for key, held in list(self._held.items()):
                    held.task.cancel()
                    await self._let_go(key)
                continue
            for held in list(self._held.values()):
                try:
                    await held.msg.in_progress()
                except Exception as exc:  # noqa: BLE001
                    log.warning("lease renewal failed: %s", exc)

    async def shutdown(self) -> None:
        """SIGTERM: stop taking work, hand every claim back at once, stop the runners."""
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loop_done.wait(), timeout=1.0)
        for held in list(self._held.values()):
            self._on_claim("handed_back")
            with contextlib.suppress(Exception):
                await held.msg.nak()
            held.task.cancel()
        for held in list(self._held.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await held.task
        self._held.clear()
        self._on_change(0)


async def _nak_buffered(psub: object) -> None:
    """Hand back claims the server delivered after our last fetch had already timed out.

    nats.py buffers such a late message in the subscription for the next fetch; a replica
    that stops fetching would otherwise sit on the claim until its lease runs out.
    """
    queue = psub._sub._pending_queue  # type: ignore[attr-defined]
    while not queue.empty():
        msg = queue.get_nowait()
        if msg.reply and not (msg.headers or {}).get("Status"):
            with contextlib.suppress(Exception):
                await msg.nak()


async def publish_claims(nc: Client, tenant: str, session: str, stages: list[str]) -> None:
    js = nc.jetstream()
    for stage in stages:
        subject = claim_subject(stage, tenant, session)
        await js.publish(subject, b"", headers={"Nats-Msg-Id": f"claim:{subject}"})
