"""A tenant's stored provider keys, fetched by a stage from session-control.

A tenant may store its own Deepgram, Gemini, OpenAI or ElevenLabs key through the admin
API (PostgreSQL keeps it Fernet-encrypted). A stage that serves the tenant's session asks
for it with a core-NATS request on ``glxapi.secrets.get``; session-control answers with the
values sealed by the bus secrets key (``NATS_SECRETS_KEY``, shared by session-control and
the stages, never by the edge). So a key travels only inside a Fernet token, in a
request/reply that no JetStream stream records, and only a process holding the bus
secrets key can open it.

Answers are cached per tenant for ``ttl_s`` (a key rotated through the API reaches the
stages within that time). When delivery is off (no bus secrets key), session-control does
not answer, or the tenant stored no key, ``get`` returns None and the stage uses the key
from its own configuration.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from cryptography.fernet import Fernet, InvalidToken
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from glyphoxa_bus.connection import principal
from glyphoxa_events.api import GetSecrets, SecretsReply
from glyphoxa_events.subjects import api_subject
from glyphoxa_runtime.logs import register_secret

log = logging.getLogger("glyphoxa.secrets")

P = TypeVar("P")

VERB = "secrets.get"
PROVIDER_SECRETS = ("deepgram", "gemini", "openai", "elevenlabs")
"""The secret names stages look for: one per cloud vendor."""
SEALED_TTL_S = 60
"""A sealed answer older than this is refused (a replayed reply is worthless)."""


def sealer(key: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except ValueError:
        raise ValueError("NATS_SECRETS_KEY is not a Fernet key (make one with "
                         "`glyphoxa secret-key`)") from None


def seal(fernet: Fernet, values: dict[str, str | None]) -> str:
    return fernet.encrypt(json.dumps(values).encode()).decode()


def unseal(fernet: Fernet, token: str) -> dict[str, str | None]:
    values = json.loads(fernet.decrypt(token.encode(), ttl=SEALED_TTL_S))
    if not isinstance(values, dict):
        raise ValueError("sealed secrets are not an object")
    return {str(k): v if isinstance(v, str) else None for k, v in values.items()}


class TenantSecrets:
    """The stage side: ``await secrets.get(tenant, "gemini")``."""

    def __init__(self, nc: Client | None, key: str | None, stage: str, *,
                 ttl_s: float = 60.0, timeout_s: float = 2.0):
        self._nc = nc
        self._fernet = sealer(key) if key else None
        self._stage = stage
        self._ttl_s, self._timeout_s = ttl_s, timeout_s
        self._cache: dict[str, tuple[float, dict[str, str | None]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def enabled(self) -> bool:
        return self._nc is not None and self._fernet is not None

    async def get(self, tenant: str, name: str) -> str | None:
        """The tenant's stored ``name`` key, or None (use the configured one)."""
        if not self.enabled:
            return None
        return (await self._tenant(tenant)).get(name)

    async def _tenant(self, tenant: str) -> dict[str, str | None]:
        cached = self._cache.get(tenant)
        if cached and time.monotonic() - cached[0] < self._ttl_s:
            return cached[1]
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            cached = self._cache.get(tenant)
            if cached and time.monotonic() - cached[0] < self._ttl_s:
                return cached[1]
            values = await self._fetch(tenant)
            self._cache[tenant] = (time.monotonic(), values)
            return values

    async def _fetch(self, tenant: str) -> dict[str, str | None]:
        assert self._nc is not None and self._fernet is not None
        request = GetSecrets(tenant=tenant, names=PROVIDER_SECRETS, stage=self._stage)
        where = {"tenant": tenant, "stage": self._stage}
        try:
            msg = await self._nc.request(api_subject(VERB, principal(self._nc)),
                                         request.model_dump_json().encode(),
                                         timeout=self._timeout_s)
            reply = SecretsReply.model_validate_json(msg.data, strict=True)
        except (TimeoutError, NatsTimeout, NoRespondersError) as exc:
            log.warning("tenant keys unavailable (%s); using the configured keys",
                        type(exc).__name__, extra=where)
            return {}
        except ValueError as exc:
            log.warning("tenant keys: malformed answer (%s); using the configured keys",
                        str(exc)[:200], extra=where)
            return {}
        if not reply.ok:
            log.warning("tenant keys refused: %s; using the configured keys", reply.error,
                        extra=where)
            return {}
        try:
            values = unseal(self._fernet, reply.sealed)
        except (InvalidToken, ValueError):
            log.error("tenant keys could not be opened: session-control and this stage have "
                      "different NATS_SECRETS_KEY values; using the configured keys", extra=where)
            return {}
        for value in values.values():
            register_secret(value)  # second line of defence: scrubbed from any log line
        log.info("tenant keys fetched", extra={
            **where, "stored": sorted(k for k, v in values.items() if v)})
        return values


class PerKey(Generic[P]):
    """One instance of a cloud provider per API key (a tenant's own), made on first use and
    kept for the process; told apart by the key's SHA-256, never the key itself."""

    def __init__(self, build: Callable[[str, str], P]):
        """``build(provider name, api key)`` makes the instance (a cloud client: cheap)."""
        self._build = build
        self._made: dict[tuple[str, str], P] = {}

    def get(self, name: str, key: str) -> P:
        slot = (name, hashlib.sha256(key.encode()).hexdigest())
        if slot not in self._made:
            self._made[slot] = self._build(name, key)
        return self._made[slot]

    def values(self) -> list[P]:
        return list(self._made.values())
