"""A Discord voice call on one machine, DAVE included: the edge's loopback.

``glyphoxa scene play --edge loopback`` (and the tests) run the real edge code without
Discord: players' opus frames are sealed as Discord relays them, DAVE by each player's
davey session, then RTP with ``aead_xchacha20_poly1305_rtpsize``; they go through the edge's
receive path (:class:`VoicePacketProcessor`) into a :class:`SessionBridge`, and what the
bridge plays back is kept. :class:`LoopbackEdge` is that edge; :class:`LoopbackCall` the call.

DAVE keeps an MLS group (RFC 9420) per call. The voice gateway is the group's *external
sender*: it holds no media keys, but it proposes who joins, picks the commit that wins and
routes commits and welcomes. Clients never propose members themselves, so without the
gateway's part davey sessions cannot form a group. :class:`LoopbackDaveGateway` plays it
over plain davey sessions in one process:

* op 25 ``external_sender_package``: the gateway's P-256 signature key (``cryptography``) in
  an MLS ``ExternalSender`` with a basic credential;
* op 27 proposals: ``add_proposal`` signs an MLS ``PublicMessage`` carrying an ``Add`` of a
  client's key package (op 26). The sender is ``external``, index 0, and the signature is
  ``SignWithLabel("FramedContentTBS")``: ECDSA P-256/SHA-256, DER-encoded, over a TBS that
  has no GroupContext for an external sender (RFC 9420 §6.1). ``proposals`` wraps messages
  the way op 27 carries them;
* routing: in ``admit``, every member processes the proposals, the first member's commit
  wins, and every member merges it (op 29). The joiners get the welcome (op 30).

The MLS group id is the channel id as 8 big-endian bytes; a member's credential is its user
id (davey does both itself). Typical use::

    gateway = LoopbackDaveGateway(CHANNEL_ID)
    sessions = gateway.create_group(BOT_ID, PLAYER_ID)  # both active, same epoch
    frame = sessions[PLAYER_ID].encrypt_opus(opus)
    assert sessions[BOT_ID].decrypt(PLAYER_ID, davey.MediaType.audio, frame) == opus

A client driven through discord.py's real voice websocket joins by key package instead:
feed it ``frame(MLS_EXTERNAL_SENDER, gateway.external_sender_package)``, take the key
package it sends (op 26), then ``welcome = gateway.admit({BOT_ID: key_package})`` and feed
``frame(MLS_WELCOME, transition_id (u16) + welcome)``.

Not modelled: removals (Remove proposals on op 13), revoked proposals, competing commits
from several members, and the transition ops 21-24.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import davey
import nacl.secret
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.client import Client

from glyphoxa_discord_edge.bridge import SessionBridge
from glyphoxa_discord_edge.inbound import Bus
from glyphoxa_discord_edge.voice_receive import (
    OPUS_PAYLOAD_TYPE,
    XCHACHA20_RTPSIZE,
    VoicePacket,
    VoicePacketProcessor,
)
from glyphoxa_events.models import Event, Played
from glyphoxa_events.subjects import SessionSubjects

MLS_10 = 1  # ProtocolVersion mls10
WIRE_FORMAT_PUBLIC_MESSAGE = 1
SENDER_TYPE_EXTERNAL = 2
CONTENT_TYPE_PROPOSAL = 2
PROPOSAL_TYPE_ADD = 1
CREDENTIAL_TYPE_BASIC = 1


def mls_varint(n: int) -> bytes:
    """RFC 9420 §2.1.2 variable-length integer, the length prefix of every vector."""
    if n < 1 << 6:
        return struct.pack(">B", n)
    if n < 1 << 14:
        return struct.pack(">H", 0x4000 | n)
    if n < 1 << 30:
        return struct.pack(">I", 0x8000_0000 | n)
    raise ValueError(f"{n} is too long for an MLS vector")


def mls_vector(data: bytes) -> bytes:
    """``opaque data<V>``: length-prefixed bytes."""
    return mls_varint(len(data)) + data


class LoopbackDaveGateway:
    """The MLS external sender of one voice channel, and the members of its group."""

    def __init__(self, channel_id: int) -> None:
        self.channel_id = channel_id
        self.group_id = channel_id.to_bytes(8, "big")
        self._key = ec.generate_private_key(ec.SECP256R1())
        public_key = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        credential = struct.pack(">H", CREDENTIAL_TYPE_BASIC) + mls_vector(b"\x00")
        self.external_sender_package = mls_vector(public_key) + credential
        """Body of op 25 (MLS_EXTERNAL_SENDER): ``ExternalSender{signature_key, credential}``."""
        self.members: dict[int, davey.DaveSession] = {}
        """Sessions in the group, by user id; the first one commits."""
        self._seq = 0

    # --- clients ----------------------------------------------------------------------

    def session(self, user_id: int) -> davey.DaveSession:
        """A participant's new client that has had op 25, not yet in the group."""
        session = davey.DaveSession(davey.DAVE_PROTOCOL_VERSION, user_id, self.channel_id)
        session.set_external_sender(self.external_sender_package)
        return session

    def create_group(self, *user_ids: int) -> dict[int, davey.DaveSession]:
        """New clients for ``user_ids``, all in one group. The first one founds it."""
        sessions = [self.session(user_id) for user_id in user_ids]
        self.join(*sessions)
        return {session.user_id: session for session in sessions}

    def join(self, *sessions: davey.DaveSession) -> None:
        """Let ``sessions`` into the call. With no group yet, the first one founds it
        (its pending one-member group becomes the call's group); the others join by welcome."""
        if not self.members and sessions:
            founder, *sessions = sessions
            self.members[founder.user_id] = founder
        if not sessions:
            return
        welcome = self.admit({s.user_id: s.get_serialized_key_package() for s in sessions})
        for session in sessions:
            session.process_welcome(welcome)
            self.members[session.user_id] = session

    def admit(self, key_packages: Mapping[int, bytes]) -> bytes:
        """Add the owners of ``key_packages`` (user id -> op 26 body) to the group: propose
        (op 27) to every member, merge the first member's commit everywhere (op 29) and
        return the welcome for the joiners (op 30). The joiners are not made members
        here: a test that holds their sessions uses ``join`` instead."""
        if not self.members:
            raise ValueError("no group yet: join() a founder first")
        members = list(self.members.values())
        epoch = members[0].epoch or 0
        proposals = self.proposals(*(self.add_proposal(kp, epoch) for kp in key_packages.values()))
        expected = [*self.members, *key_packages]
        results = [
            member.process_proposals(davey.ProposalsOperationType.append, proposals, expected)
            for member in members
        ]
        winner = results[0]
        if winner is None or winner.welcome is None:
            raise RuntimeError("the committing member made no commit and welcome")
        for member in members:
            member.process_commit(winner.commit)
        return winner.welcome

    # --- MLS messages -----------------------------------------------------------------

    def add_proposal(self, key_package: bytes, epoch: int) -> bytes:
        """An ``MLSMessage(PublicMessage)`` proposing to add ``key_package``'s owner."""
        framed_content = (
            mls_vector(self.group_id)
            + struct.pack(">Q", epoch)
            + struct.pack(">BI", SENDER_TYPE_EXTERNAL, 0)  # Sender{external, sender_index 0}
            + mls_vector(b"")  # authenticated_data
            + struct.pack(">B", CONTENT_TYPE_PROPOSAL)
            + struct.pack(">H", PROPOSAL_TYPE_ADD)
            + key_package  # Add{KeyPackage}: davey serializes a whole KeyPackage
        )
        prefix = struct.pack(">HH", MLS_10, WIRE_FORMAT_PUBLIC_MESSAGE)
        signature = self._sign_with_label("FramedContentTBS", prefix + framed_content)
        # an external sender's PublicMessage has no membership tag
        return prefix + framed_content + mls_vector(signature)

    @staticmethod
    def proposals(*messages: bytes) -> bytes:
        """The proposals of op 27 (after its operation-type byte): ``MLSMessage proposals<V>``."""
        return mls_vector(b"".join(messages))

    def _sign_with_label(self, label: str, content: bytes) -> bytes:
        sign_content = mls_vector(b"MLS 1.0 " + label.encode()) + mls_vector(content)
        return self._key.sign(sign_content, ec.ECDSA(hashes.SHA256()))

    # --- discord.py's voice websocket ---------------------------------------------------

    def frame(self, op: int, body: bytes) -> bytes:
        """A binary voice websocket message as the gateway sends it: ``u16 seq, u8 op, body``
        (for ``DiscordVoiceWebSocket.received_binary_message``)."""
        self._seq += 1
        return struct.pack(">HB", self._seq, op) + body


def seal_rtp(box: nacl.secret.Aead, ssrc: int, sequence: int, timestamp: int, nonce: int,
             payload: bytes) -> bytes:
    """``payload`` in an RTP packet sealed as Discord relays it with
    ``aead_xchacha20_poly1305_rtpsize``: the header is the associated data, and the nonce's
    first 4 bytes (a counter) follow the ciphertext."""
    header = bytes([0x80, OPUS_PAYLOAD_TYPE]) + struct.pack(">HII", sequence, timestamp, ssrc)
    counter = struct.pack(">I", nonce & 0xFFFFFFFF)
    return header + box.encrypt(payload, header, counter + bytes(20)).ciphertext + counter


# --- the call and the edge on it ------------------------------------------------------------

BOT_ID = 900_000_000_000_000_001
CHANNEL_ID = 900_000_000_000_000_002


@dataclass
class LoopbackConnection:
    """What the receive path reads of a voice connection (``VoiceConnection``): the keys a
    member of the call holds."""

    secret_key: list[int]
    dave_session: davey.DaveSession
    mode: str = XCHACHA20_RTPSIZE
    dave_protocol_version: int = davey.DAVE_PROTOCOL_VERSION


@dataclass
class _Player:
    user_id: int
    ssrc: int
    session: davey.DaveSession
    sequence: int = 0
    nonce: int = 0
    first_ns: int | None = None
    """When the player first spoke: the RTP clock runs from there in real time, as a
    client's does (its timestamp jumps across the silences it does not send)."""


class LoopbackCall:
    """A voice channel with the bot and ``speakers`` in one DAVE group. ``hear`` takes a
    player's frame through encryption and the edge's receive path; ``send`` is the bot's
    voice (a ``FrameSink``): what it plays is kept in ``played``."""

    def __init__(self, speakers: list[str]):
        gateway = LoopbackDaveGateway(CHANNEL_ID)
        ids = {name: BOT_ID + 1 + n for n, name in enumerate(speakers)}
        sessions = gateway.create_group(BOT_ID, *ids.values())
        key = os.urandom(32)
        self._box = nacl.secret.Aead(key)
        self.receive = VoicePacketProcessor(LoopbackConnection(list(key), sessions[BOT_ID]))
        self._players = {name: _Player(uid, 1000 + n, sessions[uid])
                         for n, (name, uid) in enumerate(ids.items())}
        self.names = {uid: name for name, uid in ids.items()}
        for player in self._players.values():  # op 5 SPEAKING, as each starts talking
            self.receive.speaker(player.user_id, player.ssrc)
        self.played: list[bytes] = []

    def hear(self, speaker: str, opus: bytes, at_ns: int) -> list[VoicePacket]:
        """``speaker`` said ``opus`` at ``at_ns``; it arrives at once."""
        return self.receive.feed(self.datagram(speaker, opus, at_ns), at_ns)

    def datagram(self, speaker: str, opus: bytes, at_ns: int = 0) -> bytes:
        """``opus`` as Discord relays it from ``speaker``: DAVE, then RTP and transport."""
        p = self._players[speaker]
        payload = p.session.encrypt_opus(opus)
        if p.first_ns is None:
            p.first_ns = at_ns
        timestamp = (at_ns - p.first_ns) * 48_000 // 1_000_000_000 & 0xFFFFFFFF
        datagram = seal_rtp(self._box, p.ssrc, p.sequence, timestamp, p.nonce, payload)
        p.sequence = (p.sequence + 1) & 0xFFFF
        p.nonce += 1
        return datagram

    def send(self, opus: bytes) -> None:
        self.played.append(opus)


class _Noting:
    """The bridge's bus, noting each ``Played`` it publishes (what the call heard)."""

    def __init__(self, bus: Bus, heard: dict[str, Played]):
        self._bus, self._heard = bus, heard

    async def publish(self, subject: str, data: bytes, msg_id: str,
                      headers: dict[str, str] | None = None) -> None:
        await self._bus.publish(subject, data, msg_id, headers)

    async def publish_event(self, subject: str, event: Event, msg_id: str) -> None:
        if isinstance(event, Played):
            self._heard[event.turn_id] = event
        await self._bus.publish_event(subject, event, msg_id)


@dataclass
class LoopbackEdge:
    """discord-edge's session bridge on a :class:`LoopbackCall` instead of Discord."""

    nc: Client
    bus: Bus
    speakers: list[str]
    call: LoopbackCall = field(init=False)
    bridge: SessionBridge | None = None
    heard: dict[str, Played] = field(default_factory=dict)
    """Every turn's ``Played``: players who talk over an NPC cut it off, as at a table."""

    def __post_init__(self) -> None:
        self.call = LoopbackCall(self.speakers)

    async def start(self, subjects: SessionSubjects) -> None:
        self.bridge = SessionBridge(self.nc, _Noting(self.bus, self.heard), subjects, self.call,
                                    lambda uid: self.call.names.get(uid, ""))
        await self.bridge.start()

    def speak(self, speaker: str, opus: bytes, at_ns: int) -> None:
        assert self.bridge is not None
        for p in self.call.hear(speaker, opus, at_ns):
            self.bridge.packet(p.user_id, p.sequence, p.timestamp, p.opus, p.received_ns)

    async def close(self, drain_s: float = 30.0) -> None:
        """Close once what is queued has been played (at most ``drain_s``), so the last
        reply is heard whole, as at a table."""
        if self.bridge is None:
            return
        deadline = time.monotonic() + drain_s
        while not self.bridge.playback.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.bridge.close()

    def report(self) -> dict[str, Any]:
        """What went through the edge: the receive path's counters, the bridge's, playback's."""
        assert self.bridge is not None
        return {"receive": asdict(self.call.receive.counters),
                "inbound": asdict(self.bridge.inbound.counters),
                "bridge": asdict(self.bridge.counters),
                "playback": asdict(self.bridge.playback.stats),
                "played_frames": len(self.call.played),
                "heard": {turn: {"complete": p.complete, "text_heard": p.text_heard}
                          for turn, p in self.heard.items()}}
