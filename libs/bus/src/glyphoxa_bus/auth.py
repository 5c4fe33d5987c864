"""Who may do what on the bus: one NATS user per service and per tenant edge, each with the
subjects it uses and no more, in one account (docs/adr/0006-nats-authorization.md).

This module is the one place the permissions are written. :func:`server_auth_config`
renders them as the ``accounts`` block of nats-server's configuration (the file that
``include`` pulls in: compose's and Kubernetes' ``auth.conf``, ``glyphoxa up``'s own), with
each user's password as a bcrypt hash so the file holds nothing a client could log in with.

What everyone but session-control is denied, whatever else it is allowed: reading a stream
directly (``STREAM.MSG.GET``, ``DIRECT.GET``: a message of any tenant by sequence number)
and administering streams. session-control declares the streams and the buckets
(:func:`glyphoxa_bus.streams.ensure_streams`); the other services find them made.

Acks: nats-server 2.15 may send the v2 ack subject
``$JS.ACK.<domain>.<account hash>.<stream>.<consumer>....`` as well as the v1
``$JS.ACK.<stream>.<consumer>....``; a consumer's user may publish both, for the streams it
consumes only. Replies go to the user's own inbox prefix (``_INBOX_<user>``, set on the
connection by :func:`glyphoxa_bus.connection.connect`): no user can read another's replies.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from glyphoxa_bus.streams import (
    CONTROL,
    EVENTS,
    HEARTBEAT_BUCKET,
    MEDIA,
    WORK,
    claims_consumer_name,
)
from glyphoxa_events.recaps import RECAP_SUBJECT
from glyphoxa_events.subjects import API_ROOT, CLAIM_ROOT, ROOT, STAGES
from glyphoxa_events.tokens import validate_token

ACCOUNT = "GLYPHOXA"  # KEDA's nats-jetstream trigger names it (`account`)
SERVICES = ("session-control", "vad", "stt", "npc-brain", "tts", "discord-edge")
OPERATOR = "operator"  # the operator's tools: scene player, replay, benchmarks, tests
DECLARERS = ("session-control", OPERATOR)  # the users that declare streams and buckets
TENANT_EDGE_PREFIX = "edge-"  # a tenant's own edge logs in as edge-<tenant>
JS = "$JS.API"
KV_HEARTBEATS = f"$KV.{HEARTBEAT_BUCKET}"

# nobody but session-control: a stream read by sequence, and stream administration
DENIED_TO_SERVICES = (
    f"{JS}.STREAM.MSG.GET.>", f"{JS}.DIRECT.GET.>", f"{JS}.STREAM.CREATE.>",
    f"{JS}.STREAM.UPDATE.>", f"{JS}.STREAM.DELETE.>", f"{JS}.STREAM.PURGE.>",
    f"{JS}.STREAM.MSG.DELETE.>", f"{JS}.STREAM.SNAPSHOT.>", f"{JS}.STREAM.RESTORE.>",
    f"{JS}.STREAM.PEER.REMOVE.>", f"{JS}.STREAM.LEADER.STEPDOWN.>", f"{JS}.META.>",
    f"{JS}.ACCOUNT.>", f"{JS}.SERVER.>", "$SYS.>",
)

# what each stage reads (stream, subjects of a session) and publishes (kinds of a session)
STAGE_INPUT = {"vad": MEDIA, "stt": EVENTS, "npc-brain": EVENTS, "tts": EVENTS}
STAGE_OUTPUT = {
    "vad": ("vad.*", "ctl.bargein"),
    "stt": ("stt.*", "usage.stt"),
    "npc-brain": ("reply.*", "ctl.turn", "usage.npc-brain"),
    "tts": ("audio.out.*", "ctl.audio.done", "usage.tts"),
}
EDGE_OUTPUT = ("audio.in.*", "ctl.speaker", "ctl.played", "ctl.bargein")
# the bus API verbs each stage may ask session-control for: its tenants' provider keys, and
# npc-brain an NPC's memories (docs/adr/0007)
STAGE_VERBS = {"vad": ("secrets.get",), "stt": ("secrets.get",),
               "npc-brain": ("secrets.get", "memory.recall"), "tts": ("secrets.get",)}
EDGE_VERBS = ("session.start", "session.stop", "session.get", "session.find", "npc.list",
              "npc.mute", "npc.speak", "npc.teach", "campaign.search", "edge.bots")


@dataclass(frozen=True)
class Permissions:
    """A user's publish and subscribe allow lists, and what it may never publish."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = DENIED_TO_SERVICES
    deny_subscribe: tuple[str, ...] = field(default_factory=tuple)
    responds: bool = False  # may answer a request it received (its reply subject), once

    def as_config(self) -> dict[str, object]:
        def side(allow: tuple[str, ...], deny: tuple[str, ...]) -> dict[str, list[str]]:
            return {"allow": sorted(set(allow)), **({"deny": sorted(set(deny))} if deny else {})}

        return {"publish": side(self.publish, self.deny_publish),
                "subscribe": side(self.subscribe, self.deny_subscribe),
                **({"allow_responses": True} if self.responds else {})}


def inbox_prefix(user: str) -> str:
    """The user's own reply subjects (nats.py's ``inbox_prefix``)."""
    return f"_INBOX_{validate_token(user, 'user')}"


def _consuming(stream: str) -> tuple[str, ...]:
    """Acks (v1 and v2 ack subjects) and flow-control replies for ``stream``'s consumers."""
    return (f"$JS.ACK.{stream}.>", f"$JS.ACK.*.*.{stream}.>", f"$JS.FC.{stream}.>")


def _ordered(stream: str) -> tuple[str, ...]:
    """An ordered push consumer (``glyphoxa_bus.follow``) on ``stream``, any subjects."""
    return (f"{JS}.CONSUMER.CREATE.{stream}", f"{JS}.CONSUMER.CREATE.{stream}.>",
            f"{JS}.CONSUMER.DELETE.{stream}.*", f"{JS}.CONSUMER.INFO.{stream}.*",
            *_consuming(stream))


def _durable(stream: str, name: str) -> tuple[str, ...]:
    """A durable pull consumer ``name`` (or any, for ``*``) on ``stream``, made and read."""
    return (f"{JS}.CONSUMER.DURABLE.CREATE.{stream}.{name}",
            f"{JS}.CONSUMER.CREATE.{stream}.{name}", f"{JS}.CONSUMER.CREATE.{stream}.{name}.>",
            f"{JS}.CONSUMER.INFO.{stream}.{name}", f"{JS}.CONSUMER.DELETE.{stream}.{name}",
            f"{JS}.CONSUMER.MSG.NEXT.{stream}.{name}", *_consuming(stream))


def _everyone(user: str, role: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(publish, subscribe) every service needs: JetStream's account info, stream info,
    heartbeats under its own role (``<role>.<replica>``: the key says who put it, see
    glyphoxa_bus.heartbeat.untrusted), its own inbox."""
    return ((f"{JS}.INFO", f"{JS}.STREAM.INFO.*", f"{JS}.STREAM.NAMES",
             f"{KV_HEARTBEATS}.{role}.*", f"{JS}.STREAM.INFO.KV_{HEARTBEAT_BUCKET}"),
            (f"{inbox_prefix(user)}.>",))


def _asking(user: str, *verbs: str) -> tuple[str, ...]:
    """Requests to session-control under the user's own name (``glxapi.<verb>.<user>``):
    the principal session-control authorizes (glyphoxa_session_control.nats_api)."""
    return tuple(f"{API_ROOT}.{verb}.{user}" for verb in verbs)


def _session(kinds: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{ROOT}.*.*.{kind}" for kind in kinds)


def service_permissions(service: str) -> Permissions:
    """The permissions of ``service``'s user (the user is named as the service)."""
    pub, sub = _everyone(service, "edge" if service == "discord-edge" else service)
    if service in STAGES:
        pub += (*_durable(WORK, claims_consumer_name(service)), f"{CLAIM_ROOT}.{service}.>",
                # its per-session consumers, <stage>-<tenant>-<session>: a consumer name is one
                # token, so "any consumer on its input stream" is as narrow as NATS can say
                *_durable(STAGE_INPUT[service], "*"), *_ordered(CONTROL),
                *_session(STAGE_OUTPUT[service]), *_asking(service, *STAGE_VERBS[service]))
        if service == "npc-brain":  # it makes recaps for session-control (glxrecap.make)
            return Permissions(pub, (*sub, RECAP_SUBJECT), responds=True)
        return Permissions(pub, sub)
    if service == "discord-edge":
        pub += (*_ordered(MEDIA), *_ordered(CONTROL), *_session(EDGE_OUTPUT),
                *_asking(service, *EDGE_VERBS))
        return Permissions(pub, (*sub, f"{API_ROOT}.edge.changed"))
    no_admin = (f"{JS}.ACCOUNT.>", f"{JS}.SERVER.>", f"{JS}.META.>", "$SYS.>")
    if service == "session-control":
        # the system of record: declares streams and buckets, reads any stream, serves the
        # API; still no account or server administration
        return Permissions(
            publish=(*pub, f"{JS}.>", f"{ROOT}.>", f"{CLAIM_ROOT}.>", "$KV.>",
                     f"{API_ROOT}.edge.changed", RECAP_SUBJECT, *_consuming("*")),
            subscribe=(*sub, f"{API_ROOT}.>"), deny_publish=no_admin, responds=True)
    if service == OPERATOR:
        # the operator's own tools (scene player, replay, benchmarks): everything in the
        # account but its administration, like the admin API's operator key
        return Permissions(publish=(">",), subscribe=(">",), deny_publish=no_admin)
    raise ValueError(f"unknown service {service!r} (one of {', '.join((*SERVICES, OPERATOR))})")


def tenant_edge_user(tenant: str) -> str:
    return f"{TENANT_EDGE_PREFIX}{validate_token(tenant, 'tenant')}"


def tenant_edge_permissions(tenant: str) -> Permissions:
    """An edge that serves one tenant (self-hosted discord-edge, a browser console): its
    tenant's subjects only, and consumers only through JetStream's create request that
    names the filter (``CONSUMER.CREATE.<stream>.<name>.<filter>``), which the server
    refuses when the filter in the body differs from the subject's."""
    validate_token(tenant, "tenant")
    user = tenant_edge_user(tenant)
    mine = f"{ROOT}.{tenant}"
    pub: tuple[str, ...] = (f"{JS}.INFO", f"{JS}.STREAM.INFO.KV_{HEARTBEAT_BUCKET}",
                            f"{KV_HEARTBEATS}.{user}.*")  # its heartbeat, under its own name
    for stream in (MEDIA, CONTROL):
        pub += (f"{JS}.CONSUMER.CREATE.{stream}.*.{mine}.>", f"$JS.FC.{stream}.>")
    pub += tuple(f"{mine}.*.{kind}" for kind in EDGE_OUTPUT)
    pub += _asking(user, *EDGE_VERBS)  # session-control keeps it to its tenant
    return Permissions(publish=pub, subscribe=(f"{inbox_prefix(user)}.>",
                                               f"{API_ROOT}.edge.changed"))


def tenant_edge_key(edge_key: str, user: str) -> str:
    """The bot-token key of the tenant edge ``user`` (``edge-<tenant>``): a Fernet key derived
    from the shared ``NATS_EDGE_KEY`` by HMAC-SHA256 over the user's name. session-control
    seals that edge's bot list with it, and the edge is given only this key: a self-hosted
    edge never holds the key that opens every tenant's bot token."""
    import base64
    import hashlib
    import hmac

    if not user.startswith(TENANT_EDGE_PREFIX):
        raise ValueError(f"{user!r} is not a tenant edge (edge-<tenant>)")
    validate_token(user.removeprefix(TENANT_EDGE_PREFIX), "tenant")
    digest = hmac.new(edge_key.encode(), b"glyphoxa tenant edge key\0" + user.encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()


def users_config(users: dict[str, tuple[str, Permissions]]) -> list[dict[str, object]]:
    return [{"user": name, "password": secret, "permissions": perms.as_config()}
            for name, (secret, perms) in sorted(users.items())]


def server_auth_config(users: dict[str, tuple[str, Permissions]]) -> str:
    """nats-server's ``accounts`` block: the application account with JetStream and
    ``users`` (name -> (bcrypt hash or password, permissions)). The server's own system
    account (``$SYS``) has no user: monitoring goes through the HTTP port. JSON is valid
    nats-server configuration."""
    body = json.dumps({ACCOUNT: {"jetstream": "enabled", "users": users_config(users)}},
                      indent=1)
    return f"# generated by glyphoxa_bus.auth; do not edit (docs/adr/0006)\naccounts: {body}\n"


def new_password() -> str:
    return secrets.token_urlsafe(32)


def hash_password(password: str, rounds: int = 6) -> str:
    """bcrypt, as nats-server checks a password written ``$2a$...`` in its configuration.

    The passwords are 256 random bits (:func:`new_password`): no cost factor makes guessing
    one any harder than it is, so the cost is low, and a reconnect storm after a broker
    restart (every process logging in at once) costs the server little."""
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds, prefix=b"2a")).decode()


def users() -> tuple[str, ...]:
    """The users every deployment has: one per service, and the operator's."""
    return (*SERVICES, OPERATOR)


def complete_passwords(passwords: dict[str, str]) -> list[str]:
    """Make the passwords ``passwords`` lacks (for :func:`users`); the names made."""
    made = [name for name in users() if not passwords.get(name)]
    for name in made:
        passwords[name] = new_password()
    return made


def permissions_of(user: str) -> Permissions:
    if user.startswith(TENANT_EDGE_PREFIX):
        return tenant_edge_permissions(user.removeprefix(TENANT_EDGE_PREFIX))
    return service_permissions(user)


def server_config_for(passwords: dict[str, str]) -> str:
    """The ``accounts`` block for these users (services, operator, ``edge-<tenant>``s),
    passwords hashed."""
    return server_auth_config({name: (hash_password(pw), permissions_of(name))
                               for name, pw in passwords.items()})
