"""Discord for one bot, on this machine, speaking Discord's wire protocols to the real
discord.py: the REST API, the gateway, the voice gateway and the voice server's UDP side.

Discord cannot be reached from the test machines, so this is what discord-edge's real entry
point connects to in tests. It covers what a bot at a table meets:

* REST (``/api/v10``): login (``/users/@me``, ``/oauth2/applications/@me``), the command
  sync (``PUT /applications/{app}/commands``), interaction answers (``callback``) and
  follow-ups (``/webhooks/{app}/{token}``). Everything is recorded; an endpoint it does not
  know answers 404 and is noted in ``unexpected``.
* The gateway (``/gateway``): HELLO, IDENTIFY (the token is checked: a wrong one is closed
  with 4004 as Discord does), READY, GUILD_CREATE, heartbeats, RESUME (events missed while
  away are replayed, or op 9 when ``resumable`` is off), voice state updates (op 4) answered
  with VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE, and INTERACTION_CREATE for the commands
  ``interact`` runs as a member would.
* The voice gateway (``/``, since discord.py connects to ``wss://{endpoint}/?v=8``): HELLO,
  IDENTIFY, READY, SELECT_PROTOCOL, SESSION_DESCRIPTION with
  ``aead_xchacha20_poly1305_rtpsize`` and DAVE version 1, heartbeats, RESUME, the DAVE
  handshake (op 25 external sender, op 26 key package, op 30 welcome with a transition, op 23
  ready, op 22 execute) with the players already in the call as members of a real MLS group
  (``LoopbackDaveGateway``), then op 11 and op 5 for each player.
* UDP: IP discovery, the bot's RTP (opened and DAVE-decrypted as a player's client would,
  kept in ``VoiceCall.heard``), and players' speech sent to the bot the way Discord relays it.

Everything runs over TLS with a certificate made for the test (``Tls``): discord.py's voice
URL is always ``wss://``, so the edge is given the certificate through ``SSL_CERT_FILE``
instead of any switch that turns verification off.

Not modelled: rate limits, sharding, zlib compression (discord.py accepts plain frames),
members joining or leaving mid-call, DAVE removals and downgrades.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import itertools
import json
import os
import secrets
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import davey
import nacl.secret
from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from glyphoxa_discord_edge.loopback import LoopbackConnection, LoopbackDaveGateway, seal_rtp
from glyphoxa_discord_edge.voice_receive import XCHACHA20_RTPSIZE, VoicePacketProcessor

APP_ID = 910_000_000_000_000_001
"""The application's id, which is also the bot user's."""
VIEW_CHANNEL, SEND_MESSAGES, MANAGE_GUILD = 1 << 10, 1 << 11, 1 << 5
CONNECT, SPEAK, USE_APPLICATION_COMMANDS = 1 << 20, 1 << 21, 1 << 31
EVERYONE = VIEW_CHANNEL | SEND_MESSAGES | CONNECT | SPEAK | USE_APPLICATION_COMMANDS
EPHEMERAL = 1 << 6
_ids = itertools.count(920_000_000_000_000_001)


def snowflake() -> int:
    return next(_ids)


def _json(data: Any, status: int = 200) -> web.Response:
    """JSON exactly as Discord labels it: discord.py decodes only ``application/json``,
    without a charset."""
    return web.Response(body=json.dumps(data).encode(), status=status,
                        content_type="application/json")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


# --- TLS ---------------------------------------------------------------------------------


@dataclass
class Tls:
    """A self-signed certificate for 127.0.0.1, written to ``directory``. Give the client
    ``cert_file`` as its trust store (``SSL_CERT_FILE``)."""

    directory: Path

    def __post_init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-discord.test")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        self.cert_file = self.directory / "fake-discord.pem"
        self.key_file = self.directory / "fake-discord.key"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


# --- the server's people and places -----------------------------------------------------


@dataclass
class Member:
    name: str
    roles: list[str] = field(default_factory=list)
    """Role names (the guild makes the roles)."""
    voice: str | None = None
    """The name of the voice channel the member sits in."""
    id: int = field(default_factory=snowflake)
    ssrc: int = 0
    rtp_sequence: int = 0
    rtp_timestamp: int = 0

    def user(self) -> dict[str, Any]:
        return {"id": str(self.id), "username": self.name.lower(), "global_name": self.name,
                "discriminator": "0", "avatar": None}


@dataclass
class Guild:
    name: str
    members: list[Member]
    voice_channels: list[str] = field(default_factory=lambda: ["Tavern"])
    bot_denied: dict[str, int] = field(default_factory=dict)
    """Permissions the bot is denied in a voice channel, by channel name."""
    id: int = field(default_factory=snowflake)
    text_channel: int = field(default_factory=snowflake)
    owner: int = field(default_factory=snowflake)

    def __post_init__(self) -> None:
        self.channel_ids = {name: snowflake() for name in self.voice_channels}
        names = sorted({role for m in self.members for role in m.roles})
        self.role_ids = {name: snowflake() for name in names}
        self.voice_sessions: dict[int, str] = {m.id: secrets.token_hex(16) for m in self.members}
        for n, member in enumerate(self.members):
            member.ssrc = 5000 + n

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def channel_name(self, channel_id: int) -> str:
        return next(name for name, cid in self.channel_ids.items() if cid == channel_id)

    def member_payload(self, member: Member) -> dict[str, Any]:
        return {"user": member.user(), "nick": None, "roles": [str(self.role_ids[r])
                                                              for r in member.roles],
                "joined_at": _now(), "deaf": False, "mute": False, "flags": 0}

    def voice_state(self, user_id: int, channel_id: int | None, session_id: str,
                    member: dict[str, Any] | None = None) -> dict[str, Any]:
        state: dict[str, Any] = {
            "guild_id": str(self.id), "channel_id": str(channel_id) if channel_id else None,
            "user_id": str(user_id), "session_id": session_id, "deaf": False, "mute": False,
            "self_deaf": False, "self_mute": False, "self_video": False, "suppress": False,
            "request_to_speak_timestamp": None}
        if member is not None:
            state["member"] = member
        return state

    def payload(self, bot: dict[str, Any]) -> dict[str, Any]:
        roles = [{"id": str(self.id), "name": "@everyone", "permissions": str(EVERYONE),
                  "position": 0, "color": 0, "hoist": False, "managed": False,
                  "mentionable": False, "flags": 0}]
        roles += [{"id": str(rid), "name": name, "permissions": "0", "position": n + 1,
                   "color": 0, "hoist": False, "managed": False, "mentionable": False,
                   "flags": 0} for n, (name, rid) in enumerate(self.role_ids.items())]
        channels: list[dict[str, Any]] = [{
            "id": str(self.text_channel), "type": 0, "guild_id": str(self.id),
            "name": "general", "position": 0, "permission_overwrites": [], "nsfw": False,
            "parent_id": None, "topic": None, "last_message_id": None, "rate_limit_per_user": 0}]
        for n, (name, cid) in enumerate(self.channel_ids.items()):
            denied = self.bot_denied.get(name, 0)
            overwrites = ([{"id": bot["id"], "type": 1, "allow": "0", "deny": str(denied)}]
                          if denied else [])
            channels.append({"id": str(cid), "type": 2, "guild_id": str(self.id), "name": name,
                             "position": n + 1, "permission_overwrites": overwrites,
                             "bitrate": 64000, "user_limit": 0, "rtc_region": None,
                             "parent_id": None, "nsfw": False, "rate_limit_per_user": 0})
        bot_member = {"user": bot, "nick": None, "roles": [], "joined_at": _now(),
                      "deaf": False, "mute": False, "flags": 0}
        return {
            "id": str(self.id), "name": self.name, "icon": None, "owner_id": str(self.owner),
            "afk_timeout": 300, "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "features": [], "mfa_level": 0,
            "system_channel_flags": 0, "premium_tier": 0, "nsfw_level": 0,
            "preferred_locale": "en-US", "roles": roles, "emojis": [], "stickers": [],
            "channels": channels, "threads": [], "presences": [], "stage_instances": [],
            "guild_scheduled_events": [], "soundboard_sounds": [],
            "members": [bot_member, *(self.member_payload(m) for m in self.members)],
            "voice_states": [self.voice_state(m.id, self.channel_ids[m.voice],
                                              self.voice_sessions[m.id])
                             for m in self.members if m.voice],
            "member_count": len(self.members) + 1, "large": False, "unavailable": False,
            "joined_at": _now()}


# --- voice ------------------------------------------------------------------------------


@dataclass
class VoiceCall:
    """One voice websocket of the bot: the call it joined, its keys and what it sent."""

    guild: Guild
    channel_id: int
    ws: web.WebSocketResponse
    ssrc: int = field(default_factory=lambda: 100 + secrets.randbelow(1000))
    secret_key: bytes = field(default_factory=lambda: os.urandom(32))
    bot_address: tuple[str, int] | None = None
    resumed: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the bot is in the DAVE group and its transition executed."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    heard: list[tuple[float, bytes]] = field(default_factory=list)
    """The bot's frames as a player hears them (DAVE-decrypted), with arrival times."""
    bot_speaking: list[int] = field(default_factory=list)
    _seq: int = 0
    _nonce: int = 0

    def __post_init__(self) -> None:
        self.players = [m for m in self.guild.members
                        if m.voice and self.guild.channel_ids[m.voice] == self.channel_id]
        self.dave = LoopbackDaveGateway(self.channel_id)
        self.sessions = self.dave.create_group(*(m.id for m in self.players))
        self._box = nacl.secret.Aead(self.secret_key)
        self._listener: VoicePacketProcessor | None = None

    async def send(self, op: int, data: Any) -> None:
        self._seq += 1
        await self.ws.send_str(json.dumps({"op": op, "d": data, "seq": self._seq}))

    async def send_binary(self, op: int, body: bytes) -> None:
        self._seq += 1
        await self.ws.send_bytes(struct.pack(">HB", self._seq & 0xFFFF, op) + body)

    def listener(self, bot_id: int) -> VoicePacketProcessor:
        """A player's client opening the bot's audio (the first player's DAVE session)."""
        if self._listener is None:
            first = self.players[0]
            self._listener = VoicePacketProcessor(
                LoopbackConnection(list(self.secret_key), self.sessions[first.id]))
            self._listener.speaker(bot_id, self.ssrc)
        return self._listener

    def datagram(self, member: Member, opus: bytes) -> bytes:
        """``opus`` from ``member`` as Discord relays it to the bot."""
        payload = self.sessions[member.id].encrypt_opus(opus)
        packet = seal_rtp(self._box, member.ssrc, member.rtp_sequence, member.rtp_timestamp,
                          self._nonce, payload)
        member.rtp_sequence = (member.rtp_sequence + 1) & 0xFFFF
        member.rtp_timestamp = (member.rtp_timestamp + 960) & 0xFFFFFFFF
        self._nonce += 1
        return packet

    def audio(self) -> list[bytes]:
        """The bot's frames heard, without its silence frames."""
        return [opus for _, opus in self.heard if opus != b"\xf8\xff\xfe"]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, fake: FakeDiscord):
        self.fake = fake
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.fake._datagram(data, addr)


# --- the fake ---------------------------------------------------------------------------


@dataclass
class Interaction:
    """A command a member ran, and what the bot answered."""

    id: int
    token: str
    answers: list[dict[str, Any]] = field(default_factory=list)
    """Every response in order: the callback's and each follow-up's payload."""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def text(self) -> str:
        return "\n".join(a.get("content") or "" for a in self.answers if a.get("content"))


class FakeDiscord:
    """Discord for one bot token and one guild (see the module's docstring)."""

    def __init__(self, token: str, guild: Guild, directory: Path):
        self.token, self.guild = token, guild
        self.tls = Tls(directory)
        self.bot = {"id": str(APP_ID), "username": "glyphoxa", "global_name": "Glyphoxa",
                    "discriminator": "0", "avatar": None, "bot": True}
        self.port = 0
        self.udp_port = 0
        self.resumable = True
        self.speaking_ops = True
        """Whether the voice gateway names each player's SSRC (op 5) once the bot is in."""
        self.commands: list[dict[str, Any]] = []
        self.logins = 0
        self.identifies = 0
        self.resumes: list[bool] = []
        """One entry per RESUME: whether it was accepted."""
        self.unexpected: list[str] = []
        self.interactions: dict[int, Interaction] = {}
        self.calls: list[VoiceCall] = []
        """Every voice websocket the bot opened, in order."""
        self.bot_channel: int | None = None
        self._session_id = ""
        self._events: list[dict[str, Any]] = []
        self._gateway: web.WebSocketResponse | None = None
        self._ready = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._udp: _Udp | None = None

    # --- lifecycle ---

    @property
    def api_base(self) -> str:
        return f"https://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/gateway"

    def edge_env(self) -> dict[str, str]:
        """What discord-edge needs to use this Discord instead of the real one."""
        return {"DISCORD_EDGE_API_BASE": self.api_base,
                "DISCORD_EDGE_GATEWAY_URL": self.gateway_url,
                "SSL_CERT_FILE": str(self.tls.cert_file)}

    async def start(self) -> FakeDiscord:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway_ws)
        app.router.add_get("/", self._voice_ws)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls.server_context())
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()
        transport, self._udp = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=("127.0.0.1", 0))
        self.udp_port = transport.get_extra_info("sockname")[1]
        return self

    async def stop(self) -> None:
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait(self, predicate: Callable[[], object], timeout: float = 20.0) -> None:
        """Until ``predicate()`` holds; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Discord saw no such thing within {timeout:g} s")
            await asyncio.sleep(0.02)

    # --- REST ---

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path, method = request.match_info["tail"], request.method
        if path.startswith("interactions/") and path.endswith("/callback"):
            return await self._callback(request, path)
        if path.startswith(f"webhooks/{APP_ID}/"):
            return await self._followup(request, path)
        if request.headers.get("Authorization") != f"Bot {self.token}":
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        if (method, path) == ("GET", "users/@me"):
            self.logins += 1
            return _json(self.bot)
        if (method, path) == ("GET", "oauth2/applications/@me"):
            return _json({
                "id": str(APP_ID), "name": "Glyphoxa", "description": "", "icon": None,
                "bot_public": False, "bot_require_code_grant": False, "verify_key": "00",
                "owner": {"id": str(self.guild.owner), "username": "owner",
                          "discriminator": "0", "avatar": None}, "flags": 0})
        if (method, path) == ("PUT", f"applications/{APP_ID}/commands"):
            self.commands = [{**c, "id": str(snowflake()), "application_id": str(APP_ID),
                              "version": "1", "default_member_permissions": None}
                             for c in await request.json()]
            return _json(self.commands)
        self.unexpected.append(f"{method} {path}")
        return _json({"message": "404: Not Found", "code": 0}, status=404)

    async def _callback(self, request: web.Request, path: str) -> web.Response:
        _, iid, token, _ = path.split("/")
        interaction = self.interactions.get(int(iid))
        if interaction is None or interaction.token != token:
            return _json({"message": "Unknown interaction", "code": 10062},
                                     status=404)
        body = await request.json()
        kind, data = body["type"], body.get("data") or {}
        interaction.answers.append({"type": kind, **data})
        if kind == 4:
            interaction.done.set()
        reply: dict[str, Any] = {"interaction": {
            "id": iid, "type": 2, "response_message_loading": kind == 5,
            "response_message_ephemeral": bool((data.get("flags") or 0) & EPHEMERAL)},
            "resource": {"type": kind}}
        if kind == 4:
            reply["resource"]["message"] = self._message(data)
        return _json(reply)

    async def _followup(self, request: web.Request, path: str) -> web.Response:
        token = path.split("/")[2]
        interaction = next((i for i in self.interactions.values() if i.token == token), None)
        if interaction is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        data = await request.json()
        interaction.answers.append({"type": "followup", **data})
        interaction.done.set()
        return _json(self._message(data))

    def _message(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"id": str(snowflake()), "channel_id": str(self.guild.text_channel),
                "type": 20, "content": data.get("content", ""), "author": self.bot,
                "attachments": [], "embeds": [], "mentions": [], "mention_roles": [],
                "pinned": False, "mention_everyone": False, "tts": False, "timestamp": _now(),
                "edited_timestamp": None, "flags": data.get("flags", 0), "components": [],
                "webhook_id": str(APP_ID), "application_id": str(APP_ID)}

    # --- gateway ---

    async def _gateway_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250},
                                      "s": None, "t": None}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            payload = json.loads(msg.data)
            op, data = payload["op"], payload.get("d")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11, "d": None}))
            elif op == 2:
                await self._identify(ws, data)
            elif op == 6:
                await self._resume(ws, data)
            elif op == 4:
                await self._voice_state(data)
        if self._gateway is ws:
            self._gateway = None
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        self.identifies += 1
        self._gateway, self._session_id, self._events = ws, secrets.token_hex(16), []
        self.bot_channel = None  # a new session is in no voice channel
        await self.dispatch("READY", {
            "v": 10, "user": self.bot, "guilds": [{"id": str(self.guild.id),
                                                   "unavailable": True}],
            "session_id": self._session_id, "resume_gateway_url": self.gateway_url,
            "application": {"id": str(APP_ID), "flags": 0}, "private_channels": [],
            "relationships": [], "user_settings": {}, "presences": []})
        await self.dispatch("GUILD_CREATE", self.guild.payload(self.bot))
        self._ready.set()

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        ok = (self.resumable and data.get("token") == self.token
              and data.get("session_id") == self._session_id)
        self.resumes.append(ok)
        if not ok:
            await ws.send_str(json.dumps({"op": 9, "d": False}))
            return
        self._gateway = ws
        for event in self._events:
            if event["s"] > (data.get("seq") or 0):
                await ws.send_str(json.dumps(event))
        await self.dispatch("RESUMED", {})

    async def dispatch(self, name: str, data: dict[str, Any]) -> None:
        """A gateway event to the bot; kept for a resume if the gateway is down."""
        event = {"op": 0, "t": name, "s": len(self._events) + 1, "d": data}
        self._events.append(event)
        if self._gateway is not None and not self._gateway.closed:
            with contextlib.suppress(ConnectionError):
                await self._gateway.send_str(json.dumps(event))

    async def ready(self, timeout: float = 30.0) -> None:
        """Until the bot has identified and synced its commands."""
        await self.wait(lambda: self.identifies > 0 and self.commands, timeout)

    async def drop_gateway(self, code: int = 4000) -> None:
        """The gateway connection breaks (4000: an unknown error; discord.py resumes)."""
        if self._gateway is not None:
            ws, self._gateway = self._gateway, None
            await ws.close(code=code)

    async def _voice_state(self, data: dict[str, Any]) -> None:
        if int(data["guild_id"]) != self.guild.id:
            return
        channel = int(data["channel_id"]) if data.get("channel_id") else None
        self.bot_channel = channel
        await self.dispatch("VOICE_STATE_UPDATE", self.guild.voice_state(
            APP_ID, channel, secrets.token_hex(16), self._bot_member()))
        if channel is not None:
            await self.dispatch("VOICE_SERVER_UPDATE", {
                "token": self._voice_token(channel), "guild_id": str(self.guild.id),
                "endpoint": f"127.0.0.1:{self.port}"})

    def _bot_member(self) -> dict[str, Any]:
        return {"user": self.bot, "nick": None, "roles": [], "joined_at": _now(),
                "deaf": False, "mute": False, "flags": 0}

    def _voice_token(self, channel: int) -> str:
        return f"voice-{self._session_id[:8]}-{channel}"

    # --- interactions ---

    async def interact(self, member: Member, command: str, sub: str,
                       timeout: float = 30.0, **options: str) -> Interaction:
        """``member`` runs ``/command sub options...`` in the guild's text channel; returns
        once the bot answered with a message (not just "thinking")."""
        interaction = Interaction(snowflake(), secrets.token_urlsafe(24))
        self.interactions[interaction.id] = interaction
        permissions = EVERYONE | (MANAGE_GUILD if member.id == self.guild.owner else 0)
        await self.dispatch("INTERACTION_CREATE", {
            "id": str(interaction.id), "application_id": str(APP_ID), "type": 2,
            "token": interaction.token, "version": 1, "guild_id": str(self.guild.id),
            "channel_id": str(self.guild.text_channel),
            "channel": {"id": str(self.guild.text_channel), "type": 0, "name": "general",
                        "guild_id": str(self.guild.id)},
            "member": {**self.guild.member_payload(member), "permissions": str(permissions)},
            "data": {"id": next((c["id"] for c in self.commands if c["name"] == command), "0"),
                     "name": command, "type": 1,
                     "options": [{"type": 1, "name": sub, "options": [
                         {"type": 3, "name": k, "value": v} for k, v in options.items()]}]},
            "app_permissions": str(EVERYONE), "locale": "en-US", "guild_locale": "en-US",
            "entitlements": [], "authorizing_integration_owners": {"0": str(self.guild.id)},
            "context": 0, "attachment_size_limit": 8 * 1024 * 1024})
        await asyncio.wait_for(interaction.done.wait(), timeout)
        return interaction

    # --- voice gateway ---

    async def _voice_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        call: VoiceCall | None = None
        await ws.send_str(json.dumps({"op": 8, "d": {"heartbeat_interval": 13750}}))
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                if call is not None and msg.data[0] == 26:  # MLS key package
                    await self._admit(call, msg.data[1:])
                continue
            if msg.type != WSMsgType.TEXT:
                continue
            payload = json.loads(msg.data)
            op, data = payload["op"], payload.get("d") or {}
            if op == 3:
                await ws.send_str(json.dumps({"op": 6, "d": {"t": data.get("t")}}))
            elif op in (0, 7):  # IDENTIFY, RESUME
                if (data.get("token") != self._voice_token(self.bot_channel or 0)
                        or int(data["server_id"]) != self.guild.id):
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                call = VoiceCall(self.guild, self.bot_channel or 0, ws, resumed=op == 7)
                self.calls.append(call)
                if op == 0:
                    await call.send(2, {"ssrc": call.ssrc, "ip": "127.0.0.1",
                                        "port": self.udp_port, "heartbeat_interval": 13750,
                                        "modes": ["aead_aes256_gcm_rtpsize",
                                                  XCHACHA20_RTPSIZE]})
                else:
                    await call.send(9, None)
            elif op == 1 and call is not None:  # SELECT_PROTOCOL
                await call.send(4, {"mode": data["data"]["mode"],
                                    "secret_key": list(call.secret_key),
                                    "dave_protocol_version": davey.DAVE_PROTOCOL_VERSION,
                                    "audio_codec": "opus", "media_session_id": "fake"})
                await call.send_binary(25, call.dave.external_sender_package)
            elif op == 23 and call is not None:  # DAVE transition ready
                await call.send(22, {"transition_id": data["transition_id"]})
                await call.send(11, {"user_ids": [str(m.id) for m in call.players]})
                for player in call.players if self.speaking_ops else ():
                    await call.send(5, {"user_id": str(player.id), "ssrc": player.ssrc,
                                        "speaking": 1})
                call.ready.set()
            elif op == 5 and call is not None:
                call.bot_speaking.append(int(data.get("speaking", 0)))
        if call is not None:
            call.closed.set()
        return ws

    async def _admit(self, call: VoiceCall, key_package: bytes) -> None:
        welcome = call.dave.admit({APP_ID: key_package})
        await call.send_binary(30, struct.pack(">H", 1) + welcome)  # transition 1

    def call(self) -> VoiceCall:
        """The bot's current voice connection."""
        open_calls = [c for c in self.calls if not c.closed.is_set()]
        assert open_calls, "the bot is in no voice call"
        return open_calls[-1]

    async def connected(self, timeout: float = 30.0) -> VoiceCall:
        """Until the bot is in a call, past the DAVE handshake and its IP discovery."""
        await self.wait(lambda: any(c.ready.is_set() and c.bot_address and not c.closed.is_set()
                                    for c in self.calls), timeout)
        return self.call()

    async def drop_voice(self, code: int = 4006) -> VoiceCall:
        """The voice server ends the bot's connection (4006: session no longer valid;
        discord.py connects anew)."""
        call = self.call()
        await call.ws.close(code=code)
        return call

    async def kick(self) -> VoiceCall:
        """A moderator disconnects the bot from its voice channel."""
        call = self.call()
        self.bot_channel = None
        await self.dispatch("VOICE_STATE_UPDATE", self.guild.voice_state(
            APP_ID, None, secrets.token_hex(16), self._bot_member()))
        await call.ws.close(code=4014)
        return call

    async def say(self, member: Member, frames: list[bytes], pace_s: float = 0.02) -> None:
        """``member`` speaks ``frames`` (20 ms opus each) into the bot's call, at pace."""
        call = self.call()
        assert call.bot_address is not None and self._udp is not None
        assert self._udp.transport is not None
        start = time.monotonic()
        for n, frame in enumerate(frames):
            self._udp.transport.sendto(call.datagram(member, frame), call.bot_address)
            await asyncio.sleep(max(0.0, start + (n + 1) * pace_s - time.monotonic()))

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) == 74 and data[:2] == b"\x00\x01":  # IP discovery
            ssrc = struct.unpack_from(">I", data, 4)[0]
            call = next((c for c in reversed(self.calls) if c.ssrc == ssrc), None)
            if call is None:
                return
            call.bot_address = addr
            reply = (struct.pack(">HHI", 2, 70, ssrc) + addr[0].encode().ljust(64, b"\0")
                     + struct.pack(">H", addr[1]))
            assert self._udp is not None and self._udp.transport is not None
            self._udp.transport.sendto(reply, addr)
            return
        for call in reversed(self.calls):
            if call.bot_address == addr and call.players:
                now = time.monotonic()
                for packet in call.listener(APP_ID).feed(data, time.time_ns()):
                    call.heard.append((now, packet.opus))
                return
