"""Connecting to NATS: one client per process, reconnecting forever, errors logged."""

from __future__ import annotations

import base64
import logging
from urllib.parse import unquote, urlsplit, urlunsplit

from nats.aio.client import Client
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from glyphoxa_bus.streams import (
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_TTL_S,
    StreamSettings,
    ensure_streams,
)

log = logging.getLogger(__name__)


class BusSettings(BaseSettings):
    """``NATS_*`` settings, composed into every service's settings class."""

    model_config = SettingsConfigDict(env_prefix="NATS_", extra="ignore")

    url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma separated")
    stream_max_age_s: float = Field(24 * 3600, gt=0, description="how long sessions stay replayable")
    max_in_flight: int = Field(256, ge=1, le=65536, description="unacknowledged publishes per process")
    claim_lease_s: float = Field(10.0, gt=0.5, description="claim ack wait: failover detection time")
    drain_timeout_s: float = Field(5.0, gt=0, description="SIGTERM: longest wait for in-flight work")
    heartbeat_interval_s: float = Field(
        HEARTBEAT_INTERVAL_S, gt=0, description="how often a replica or edge puts its heartbeat")
    secrets_key: SecretStr = Field(
        SecretStr(""), description="Fernet key sealing tenants' stored provider keys on their way "
        "from session-control to the stages (`glyphoxa secret-key` makes one); empty: stages "
        "use only their configured keys")
    edge_key: SecretStr = Field(
        SecretStr(""), description="Fernet key sealing the tenants' Discord bot tokens on their "
        "way from session-control to discord-edge (`glyphoxa secret-key` makes one); the "
        "stages never get it. Empty: session-control hands out no bot tokens")
    heartbeat_ttl_s: float = Field(
        HEARTBEAT_TTL_S, gt=0, description="a heartbeat not renewed for this long expires "
                                           "(replica presumed dead); must exceed the interval")

    @model_validator(mode="after")
    def _keys_are_fernet(self) -> BusSettings:
        for name, secret in (("NATS_SECRETS_KEY", self.secrets_key),
                             ("NATS_EDGE_KEY", self.edge_key)):
            key = secret.get_secret_value()
            if not key:
                continue
            try:
                ok = len(base64.urlsafe_b64decode(key.encode())) == 32
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{name} is not a Fernet key (32 url-safe base64 bytes; "
                                 "`glyphoxa secret-key` makes one)")
        return self

    @model_validator(mode="after")
    def _ttl_exceeds_interval(self) -> BusSettings:
        if self.heartbeat_ttl_s <= self.heartbeat_interval_s:
            raise ValueError(f"NATS_HEARTBEAT_TTL_S ({self.heartbeat_ttl_s:g}) must exceed "
                             f"NATS_HEARTBEAT_INTERVAL_S ({self.heartbeat_interval_s:g})")
        return self

    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]

    def credentials(self) -> list[str]:
        """The secrets inside the URLs: a password (``nats://user:password@host``) or a
        token (``nats://token@host``), as written and percent-decoded, for the log scrubber."""
        found: list[str] = []
        for url in self.servers():
            parts = urlsplit(url if "://" in url else f"nats://{url}")
            secret = parts.password if parts.password is not None else parts.username
            if secret:
                found += [s for s in dict.fromkeys((secret, unquote(secret))) if s not in found]
        return found

    def shown(self) -> list[str]:
        """The URLs as a log line may show them: credentials replaced by ``***``."""
        out = []
        for url in self.servers():
            parts = urlsplit(url if "://" in url else f"nats://{url}")
            host = parts.netloc.rsplit("@", 1)[-1]
            out.append(urlunsplit(parts._replace(netloc=f"***@{host}" if "@" in parts.netloc
                                                 else host)))
        return out

    def stream_settings(self) -> StreamSettings:
        return StreamSettings(max_age_s=self.stream_max_age_s)


class _Client(Client):
    """nats.py's client, reading any subject. nats.py decodes a delivered message's subject as
    strict UTF-8 inside its read loop, so one message whose subject is not UTF-8 (the server
    takes any bytes, from any publisher) ended that loop: the connection went deaf while it
    still looked connected, and once pings timed out and it reconnected, a JetStream consumer
    delivered the same message again. Here invalid bytes become U+FFFD (as nats.py already
    does for header values), which no subject token matches: the message is rejected like any
    other bad subject."""

    def _build_message(self, sid: int, subject: bytes, reply: bytes, data: bytes,  # type: ignore[override]
                       headers: dict[str, str] | None) -> object:
        return self.msg_class(subject=subject.decode(errors="replace"),
                              reply=reply.decode(errors="replace"), data=data, headers=headers,
                              _client=self, _sid=sid)


async def connect(settings: BusSettings, name: str, declare: bool = True) -> Client:
    async def on_error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    client: list[Client] = []

    async def on_disconnect() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # our own drain/close, not an outage
        log.warning("nats disconnected; reconnecting")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    nc = _Client()
    await nc.connect(
        servers=settings.servers(),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        pending_size=8 * 1024 * 1024,
    )
    client.append(nc)
    if declare:
        await ensure_streams(nc.jetstream(), settings.stream_settings())
    return nc
