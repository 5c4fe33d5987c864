"""The live session registry: hot state in a JetStream KV bucket (``glx_sessions``), so edges
and tools can watch which sessions are live without asking PostgreSQL. PostgreSQL stays the
system of record; :meth:`LiveRegistry.reconcile` rebuilds the bucket from it at start-up."""

from __future__ import annotations

import json
import logging
import time

from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)
BUCKET = "glx_sessions"


class LiveRegistry:
    def __init__(self, kv: KeyValue):
        self._kv = kv

    @classmethod
    async def open(cls, nc: Client, replicas: int = 1) -> LiveRegistry:
        """The bucket, made with ``replicas`` copies (NATS_STREAM_REPLICAS) if it is new."""
        kv = await nc.jetstream().create_key_value(KeyValueConfig(
            bucket=BUCKET, description="live sessions (<tenant>.<session> -> state, edge, campaign)",
            history=1, storage=StorageType.FILE, replicas=replicas))
        return cls(kv)

    async def put(self, tenant: str, sid: str, state: str, edge: str, campaign: str) -> None:
        key = f"{tenant}.{sid}"
        try:
            if state == "ended":
                await self._kv.delete(key)
                return
            await self._kv.put(key, json.dumps({
                "tenant": tenant, "session": sid, "state": state, "edge": edge,
                "campaign": campaign, "at_ns": time.time_ns()}).encode())
        except Exception as exc:  # noqa: BLE001 - the registry is rebuilt from PostgreSQL on boot
            log.warning("live registry update failed for %s: %s", key, exc)

    async def keys(self) -> set[str]:
        try:
            return set(await self._kv.keys())
        except NoKeysError:
            return set()

    async def get(self, tenant: str, sid: str) -> dict | None:
        try:
            entry = await self._kv.get(f"{tenant}.{sid}")
        except KeyNotFoundError:
            return None
        return json.loads(entry.value) if entry.value else None

    async def reconcile(self, live: list[tuple[str, str, str, str, str]]) -> tuple[int, int]:
        """Make the bucket hold exactly ``live`` (tenant, session, state, edge, campaign);
        returns (written, removed)."""
        wanted = {f"{t}.{s}": (t, s, st, e, c) for t, s, st, e, c in live}
        stale = (await self.keys()) - wanted.keys()
        for key in stale:
            await self._kv.delete(key)
        for t, s, st, e, c in wanted.values():
            await self.put(t, s, st, e, c)
        return len(wanted), len(stale)
