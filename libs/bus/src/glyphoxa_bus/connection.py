"""Connecting to NATS: one client per process, reconnecting forever, errors logged."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from nats.aio.client import Client
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from glyphoxa_bus.auth import DECLARERS, OPERATOR, SERVICES, inbox_prefix
from glyphoxa_bus.streams import (
    DEFAULT_MAX_BYTES,
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_TTL_S,
    StreamSettings,
    await_streams,
    ensure_heartbeat_bucket,
    ensure_streams,
)
from glyphoxa_events.subjects import ANONYMOUS

log = logging.getLogger(__name__)


class BusSettings(BaseSettings):
    """``NATS_*`` settings, composed into every service's settings class."""

    model_config = SettingsConfigDict(env_prefix="NATS_", extra="ignore")

    url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma separated")
    stream_max_age_s: float = Field(
        24 * 3600, gt=0, description="how long sessions stay replayable and exportable: the "
        "streams' max age; they keep less once NATS_STREAM_MAX_BYTES is reached (docs/"
        "operations.md, Retention and replay). session-control sets it on the streams")
    stream_max_bytes: int = Field(
        DEFAULT_MAX_BYTES, ge=1024**2, description="most bytes each of the media, events and "
        "control streams keeps (the oldest go first). JetStream reserves the three against "
        "its file store limit (by default 75% of the free disk) when they are declared; "
        "about 130 MiB per session-hour are written (docs/benchmarks.md part 7). 8 GiB in k8s/")
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
    stream_replicas: int = Field(
        1, ge=1, le=5, description="copies of every stream and of the heartbeat bucket kept by "
        "a JetStream cluster (3 in k8s/); 1 for a single nats-server")
    user: str = Field(
        "", description="NATS user this process logs in as (docs/adr/0006: one per service, "
        "`edge-<tenant>` for a tenant's own edge); empty: no login")
    password: SecretStr = Field(SecretStr(""), description="that user's password")
    tls_ca: str = Field(
        "", description="PEM file of the CA that signed the NATS servers' certificates "
        "(tls:// URLs, k8s/): servers are verified against it alone; empty: the system's "
        "trust store")

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
    def _tls_ca_is_a_file(self) -> BusSettings:
        if self.tls_ca and not Path(self.tls_ca).is_file():
            raise ValueError(f"NATS_TLS_CA: {self.tls_ca} is not a file")
        return self

    @model_validator(mode="after")
    def _ttl_exceeds_interval(self) -> BusSettings:
        if self.heartbeat_ttl_s <= self.heartbeat_interval_s:
            raise ValueError(f"NATS_HEARTBEAT_TTL_S ({self.heartbeat_ttl_s:g}) must exceed "
                             f"NATS_HEARTBEAT_INTERVAL_S ({self.heartbeat_interval_s:g})")
        return self

    def login(self) -> dict[str, object]:
        """nats.py's connect arguments for the user, with replies to the user's own inbox
        prefix (the only one its permissions let it read)."""
        if not self.user:
            return {}
        return {"user": self.user, "password": self.password.get_secret_value(),
                "inbox_prefix": inbox_prefix(self.user)}

    def login_user(self) -> str:
        """The user it logs in as: ``NATS_USER``, else one in the URL (``nats://user:pw@``;
        a URL with a token has no user)."""
        if self.user:
            return self.user
        for url in self.servers():
            parts = urlsplit(url if "://" in url else f"nats://{url}")
            if parts.username and parts.password is not None:
                return unquote(parts.username)
        return ""

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
        return [shown_url(url) for url in self.servers()]

    def stream_settings(self) -> StreamSettings:
        return StreamSettings(max_age_s=self.stream_max_age_s, max_bytes=self.stream_max_bytes,
                              replicas=self.stream_replicas)

    def tls_context(self) -> ssl.SSLContext | None:
        """With ``NATS_TLS_CA``: a client context that trusts that CA only and checks host
        names; without it nats.py uses the system's trust store for ``tls://`` URLs."""
        return ssl.create_default_context(cafile=self.tls_ca) if self.tls_ca else None


class _Client(Client):
    """nats.py's client, reading any subject. nats.py decodes a delivered message's subject as
    strict UTF-8 inside its read loop, so one message whose subject is not UTF-8 (the server
    takes any bytes, from any publisher) ended that loop: the connection went deaf while it
    still looked connected, and once pings timed out and it reconnected, a JetStream consumer
    delivered the same message again. Here invalid bytes become U+FFFD (as nats.py already
    does for header values), which no subject token matches: the message is rejected like any
    other bad subject."""

    user: str = ""  # the NATS user it logged in as (BusSettings.user)

    @property
    def principal(self) -> str:
        """Who it is on session-control's API (``glxapi.<verb>.<principal>``)."""
        return self.user or ANONYMOUS

    def _build_message(self, sid: int, subject: bytes, reply: bytes, data: bytes,  # type: ignore[override]
                       headers: dict[str, str] | None) -> object:
        return self.msg_class(subject=subject.decode(errors="replace"),
                              reply=reply.decode(errors="replace"), data=data, headers=headers,
                              _client=self, _sid=sid)


def principal(nc: Client) -> str:
    """Who ``nc`` is on session-control's API: its NATS user, ``anonymous`` without one."""
    return getattr(nc, "principal", ANONYMOUS)


def shown_url(url: str) -> str:
    """A NATS URL (or a comma-separated list of them) as a log line or an error may show it:
    a login or token replaced by ``***``."""
    out = []
    for one in (u.strip() for u in url.split(",") if u.strip()):
        parts = urlsplit(one if "://" in one else f"nats://{one}")
        host = parts.netloc.rsplit("@", 1)[-1]
        out.append(urlunsplit(parts._replace(netloc=f"***@{host}" if "@" in parts.netloc
                                             else host)))
    return ", ".join(out)


async def connect(settings: BusSettings, name: str, declare: bool = True,
                  first_connect_s: float | None = None) -> Client:
    """Connect (and, as the user may, declare the streams). Once connected the client
    reconnects for ever. The first connect also retries for ever (a service started before
    the broker waits for it, not ready meanwhile), or with ``first_connect_s`` (a command a
    person is waiting on) gives up after that long with ``ConnectionError``."""
    client: list[Client] = []

    async def on_error(exc: Exception) -> None:
        if client or first_connect_s is None:
            log.warning("nats error: %s", exc)
        else:  # the command's own error says it once, when it gives up
            log.debug("nats error: %s", exc)

    async def on_disconnect() -> None:
        if not client:  # a first connect's failed try: on_error said why
            return
        if client[0].is_closed or client[0].is_draining:
            return  # our own drain/close, not an outage
        log.warning("nats disconnected; reconnecting")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    nc = _Client()
    nc.user = settings.login_user()
    try:
        async with asyncio.timeout(first_connect_s):
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
                tls=settings.tls_context(),
                **settings.login(),
            )
    except TimeoutError:
        await nc.close()
        raise ConnectionError(f"no NATS server answered within {first_connect_s:g} s "
                              f"({', '.join(settings.shown())})") from None
    client.append(nc)
    if declare and nc.user and nc.user not in DECLARERS:
        # its permissions do not let it declare (ADR 0006): session-control does that; a
        # tenant's own edge may not even look at the streams, and relies on them
        if nc.user in SERVICES:
            await await_streams(nc.jetstream(), settings.stream_settings())
    elif declare:  # the operator's tools never change a deployment's retention
        await ensure_streams(nc.jetstream(), settings.stream_settings(),
                             update=nc.user != OPERATOR)
        if settings.stream_replicas > 1:  # before any heartbeat makes it with one copy
            await ensure_heartbeat_bucket(nc.jetstream(), settings.heartbeat_ttl_s,
                                          replicas=settings.stream_replicas)
    return nc
