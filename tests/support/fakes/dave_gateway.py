"""The voice gateway's side of DAVE, so tests can build a real E2EE call locally.

DAVE (Discord's end-to-end encryption of voice) keeps an MLS group (RFC 9420) per call.
The voice gateway is the group's *external sender*: it holds no media keys, but it proposes
who joins, picks the commit that wins and routes commits and welcomes. Clients never
propose members themselves. So without this fake, davey sessions cannot form a group, and
a test cannot produce or check real DAVE frames. The fake plays the gateway's part over
plain davey sessions in one process:

* op 25 ``external_sender_package``: the gateway's P-256 signature key (made with
  ``cryptography``) in an MLS ``ExternalSender`` with a basic credential;
* op 27 proposals: ``add_proposal`` signs an MLS ``PublicMessage`` carrying an ``Add`` of a
  client's key package (op 26). The sender is ``external``, index 0, and the signature is
  ``SignWithLabel("FramedContentTBS")``: ECDSA P-256/SHA-256, DER-encoded, over a TBS that
  has no GroupContext for an external sender (RFC 9420 §6.1). ``proposals`` wraps
  messages the way op 27 carries them;
* routing: in ``admit``, every member processes the proposals, the first member's commit
  wins, and every member merges it (op 29). The joiners get the welcome (op 30).

The MLS group id is the channel id as 8 big-endian bytes; a member's credential is its
user id (davey does both itself). Typical use::

    gateway = FakeDaveGateway(CHANNEL_ID)
    sessions = gateway.create_group(BOT_ID, PLAYER_ID)  # both active, same epoch
    frame = sessions[PLAYER_ID].encrypt_opus(opus)
    assert sessions[BOT_ID].decrypt(PLAYER_ID, davey.MediaType.audio, frame) == opus

A client driven through discord.py's real voice websocket joins by key package instead:
feed it ``frame(MLS_EXTERNAL_SENDER, gateway.external_sender_package)``, take the key
package it sends (op 26), then ``welcome = gateway.admit({BOT_ID: key_package})`` and feed
``frame(MLS_WELCOME, transition_id (u16) + welcome)``.

Not modelled: removals (Remove proposals on op 13), revoked proposals, competing commits
from several members, and the transition ops 21-24 (JSON, sent by the test itself).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import davey
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

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


class FakeDaveGateway:
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
