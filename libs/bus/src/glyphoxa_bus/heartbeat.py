"""Liveness: stage replicas and edges keep a heartbeat in a JetStream KV bucket.

Bucket ``glx_heartbeats`` (``streams.HEARTBEAT_BUCKET``), key ``<role>.<replica>`` (role: a
stage name or ``edge``; both reduced to ``[-_a-zA-Z0-9]``), value a ``Heartbeat`` JSON; a
tenant's own edge (NATS user ``edge-<tenant>``) puts under ``edge-<tenant>.<replica>``, the
only keys its user may put (docs/adr/0006), and a reader believes such a heartbeat only
for that tenant's sessions (:func:`untrusted`). A
replica puts its heartbeat at once, then every ``interval_s`` and whenever its sessions
change (``poke``). A replica that dies stops putting and its key expires after the
bucket's TTL; one that stops gracefully deletes its key, so session-control can tell a
dead replica from one that left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from glyphoxa_bus.auth import TENANT_EDGE_PREFIX
from glyphoxa_bus.streams import (
    HEARTBEAT_BUCKET,
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_TTL_S,
    ensure_heartbeat_bucket,
)
from glyphoxa_events.models import Heartbeat

log = logging.getLogger(__name__)

EDGE_ROLE = "edge"
_NOT_IN_KEY = re.compile(r"[^-_a-zA-Z0-9]")


def heartbeat_key(role: str, replica: str, owner: str | None = None) -> str:
    """``<role>.<replica>`` (``<owner>.<replica>`` for a tenant's own edge, ``owner`` its
    NATS user ``edge-<tenant>``) with every character a KV key may not hold replaced by ``_``."""
    return f"{_key_part(owner or role)}.{_key_part(replica)}"


def untrusted(key: str, beat: Heartbeat) -> str | None:
    """Why the heartbeat under ``key`` is not believed, or None. Each user may put only
    under its own first token (docs/adr/0006), so the key says who wrote it: a service's
    heartbeat names its own role, and a tenant's edge (``edge-<tenant>.*``) may speak only
    as an edge, for its tenant's sessions; otherwise it could keep another tenant's dead
    session looking alive."""
    owner = key.split(".", 1)[0]
    if owner == _key_part(beat.role):
        return None
    if owner.startswith(TENANT_EDGE_PREFIX) and beat.role == EDGE_ROLE:
        tenant = owner.removeprefix(TENANT_EDGE_PREFIX)
        others = [s for s in beat.sessions if s.split(".", 1)[0] != tenant]
        if not others:
            return None
        return f"{owner} claims sessions of other tenants ({', '.join(sorted(others)[:3])})"
    return f"the key's owner {owner!r} is not the heartbeat's role {beat.role!r}"


def _key_part(name: str) -> str:
    return _NOT_IN_KEY.sub("_", name)[:120] or "_"


class HeartbeatPublisher:
    """Puts one replica's heartbeat until ``stop()``; never lets a failed put end the service."""

    def __init__(
        self,
        nc: Client,
        role: str,
        replica: str,
        sessions: Callable[[], list[str]],
        *,
        interval_s: float = HEARTBEAT_INTERVAL_S,
        ttl_s: float = HEARTBEAT_TTL_S,
        capacity: int = 0,
        clock: Callable[[], int] = time.time_ns,
        owner: str | None = None,
    ):
        if ttl_s <= interval_s:
            raise ValueError(f"heartbeat ttl {ttl_s:g} s must exceed the interval {interval_s:g} s")
        self._js = nc.jetstream(timeout=max(interval_s, 1.0))
        self.role, self.replica, self.key = role, replica, heartbeat_key(role, replica, owner)
        self._sessions, self._capacity, self._clock = sessions, capacity, clock
        self._interval_s, self._ttl_s = interval_s, ttl_s
        self._started_ns = clock()
        self._kv: KeyValue | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._running = False
        self._loop_done = asyncio.Event()
        self._failing = False

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(role=self.role, replica=self.replica, sessions=list(self._sessions()),
                         capacity=self._capacity, at_ns=self._clock(),
                         started_ns=self._started_ns)

    def poke(self) -> None:
        """Put a heartbeat now (a claim was taken or released), not at the next tick."""
        self._wake.set()

    async def run(self) -> None:
        """Put at once, then every interval and on every ``poke()``, until ``stop()``."""
        self._running = True
        self._loop_done.clear()
        try:
            while not self._stopping:
                self._wake.clear()
                await self._put()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval_s):
                        await self._wake.wait()
        finally:
            self._running = False
            self._loop_done.set()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Graceful end: stop putting, then delete the key (this replica did not die)."""
        self._stopping = True
        self._wake.set()
        if self._running:  # no put may land after the delete
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._loop_done.wait(), timeout_s)
        try:
            kv = self._kv or await self._js.key_value(HEARTBEAT_BUCKET)
            await asyncio.wait_for(kv.delete(self.key), timeout_s)
        except BucketNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001 - the key then expires after the TTL
            log.warning("could not delete heartbeat %s: %s", self.key, exc)

    async def _put(self) -> None:
        try:
            if self._kv is None:
                self._kv = await ensure_heartbeat_bucket(self._js, self._ttl_s)
            if self._stopping:  # stop() gave up waiting for us and deletes the key
                return
            await self._kv.put(self.key, self.heartbeat().to_bytes())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - retried at the next tick
            if not self._failing:
                log.warning("heartbeat put failed; retrying every %.1f s: %s", self._interval_s,
                            exc, extra={"key": self.key})
            self._failing = True
            return
        if self._failing:
            log.info("heartbeat put again", extra={"key": self.key})
            self._failing = False


@contextlib.asynccontextmanager
async def heartbeating(publisher: HeartbeatPublisher) -> AsyncIterator[HeartbeatPublisher]:
    """Run ``publisher`` for the duration of the block; its key is deleted on the way out."""
    task = asyncio.create_task(publisher.run(), name=f"heartbeat-{publisher.key}")
    try:
        yield publisher
    finally:
        try:
            await publisher.stop()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def read_heartbeats(js: JetStreamContext, timeout_s: float = 5.0) -> list[Heartbeat]:
    """Every live heartbeat in the bucket (deleted, expired and malformed entries skipped)."""
    try:
        kv = await js.key_value(HEARTBEAT_BUCKET)
    except BucketNotFoundError:
        return []
    ttl_s = (await kv.status()).ttl
    watcher = await kv.watchall(ignore_deletes=True)
    out: list[Heartbeat] = []
    try:
        while (entry := await watcher.updates(timeout=timeout_s)) is not None:
            if ttl_s and entry.created and _age_s(entry.created) > ttl_s:
                continue  # expired; the server drops it at its next age check
            try:
                beat = Heartbeat.model_validate_json(entry.value or b"", strict=True)
            except ValidationError:
                log.debug("skipping malformed heartbeat %s", entry.key)
                continue
            if (why := untrusted(entry.key, beat)) is not None:
                log.warning("heartbeat not believed: %s", why, extra={"key": entry.key})
                continue
            out.append(beat)
    finally:
        await watcher.stop()
    return out


def _age_s(created: datetime) -> float:
    return (datetime.now(UTC) - created).total_seconds()


class HeartbeatView:
    """Every live heartbeat, kept current by one long-lived watch of the bucket.

    For a reader that looks often (session-control's liveness check, every second): a
    ``read_heartbeats`` per look would create and delete a consumer each time. Keys that
    expire leave no marker in the stream, so entries older than the bucket's TTL are
    dropped here by age.
    """

    def __init__(self, js: JetStreamContext, ttl_s: float = HEARTBEAT_TTL_S):
        self._js, self._ttl_s = js, ttl_s
        self._latest: dict[str, tuple[Heartbeat, datetime]] = {}
        self._refused: set[str] = set()  # keys whose heartbeats were not believed (logged once)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> HeartbeatView:
        kv = await ensure_heartbeat_bucket(self._js, self._ttl_s)
        self._ttl_s = (await kv.status()).ttl or self._ttl_s
        watcher = await kv.watchall()
        self._task = asyncio.create_task(self._follow(watcher), name="heartbeat-view")
        return self

    async def _follow(self, watcher) -> None:  # type: ignore[no-untyped-def]
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=30)
                except TimeoutError:
                    continue
                if entry is None:  # the end of what was there when the watch began
                    continue
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    self._latest.pop(entry.key, None)
                    continue
                try:
                    beat = Heartbeat.model_validate_json(entry.value, strict=True)
                except ValidationError:
                    log.debug("skipping malformed heartbeat %s", entry.key)
                    continue
                if (why := untrusted(entry.key, beat)) is not None:
                    if entry.key not in self._refused:
                        log.warning("heartbeat not believed: %s", why, extra={"key": entry.key})
                    self._refused.add(entry.key)
                    self._latest.pop(entry.key, None)
                    continue
                self._latest[entry.key] = (beat, entry.created or datetime.now(UTC))
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    def beats(self) -> list[Heartbeat]:
        fresh = [(k, b) for k, (b, created) in self._latest.items() if _age_s(created) <= self._ttl_s]
        self._latest = {k: self._latest[k] for k, _ in fresh}
        return [b for _, b in fresh]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
