"""Receiving voice from Discord: RTP, transport decryption, DAVE decryption, speaker ids.

discord.py 2.7.1 sends voice but cannot receive it, and discord-ext-voice-recv cannot
decrypt DAVE, Discord's end-to-end encryption of voice (mandatory since March 2026). This
module is our whole receive path. It is kept in one place so it can be deleted once
upstream can receive.

A voice datagram in the ``*_rtpsize`` transport modes looks like this::

    [12 B RTP header][4 B per CSRC][4 B extension header 0xBEDE, length]  clear, the AAD
    [ciphertext: extension body (length x 4 B) + opus frame][16 B tag]    sealed
    [4 B nonce counter]                                                   clear

1. Parse. Drop RTCP (PT 200-204), the 74-byte IP discovery reply and payload types other
   than opus (120).
2. Transport decryption with the connection's secret key, in either
   ``aead_xchacha20_poly1305_rtpsize`` or ``aead_aes256_gcm_rtpsize``. The nonce is the
   trailing counter padded with zeros; the AAD is the clear header. Then skip the
   extension body at the start of the plaintext.
3. DAVE decryption with the connection's davey session, keyed by the sender's user id.
   The SSRC -> user map comes from voice websocket op 5 (SPEAKING). A DAVE frame from an
   SSRC op 5 has not named yet tells its sender itself: only that member's key opens it
   (each other member's fails authentication), so the SSRC is mapped at once. Other packets
   from an unknown SSRC are held briefly and delivered once op 5 arrives. The opus
   silence frame, and frames sent without DAVE (no 0xFAFA marker), pass through unchanged.

discord.py's socket reader thread only stamps each datagram and queues it for the event
loop. All processing runs on the loop, so the SSRC map and the held packets are touched by
one thread only. The davey session is shared with discord.py: pyo3 holds the GIL for each
call, so those calls never overlap. Failures are counted in ``ReceiveCounters``; they are
never raised into discord.py's threads or tasks.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import davey
import discord
import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from discord.gateway import DiscordVoiceWebSocket
from discord.voice_state import SocketReader, VoiceConnectionState

log = logging.getLogger("glyphoxa.discord_edge.voice_receive")

XCHACHA20_RTPSIZE = "aead_xchacha20_poly1305_rtpsize"
AES256_GCM_RTPSIZE = "aead_aes256_gcm_rtpsize"
OPUS_PAYLOAD_TYPE = 120
OPUS_SILENCE = b"\xf8\xff\xfe"
DAVE_MAGIC_MARKER = b"\xfa\xfa"  # the last two bytes of every DAVE-encrypted frame
RTCP_PACKET_TYPES = range(200, 205)
RTP_HEADER_BYTES = 12
AEAD_TAG_BYTES = 16
NONCE_COUNTER_BYTES = 4

OnPacket = Callable[[int, int, int, bytes, int], None]
"""``on_packet(user_id, rtp_seq, rtp_timestamp, opus, received_ns)``, called on the loop."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """A received voice packet, split the way rtpsize transport encryption splits it."""

    ssrc: int
    sequence: int
    timestamp: int
    header: bytes  # clear: fixed header, CSRCs and extension header; the AEAD's AAD
    extension_bytes: int  # length of the extension body that starts the plaintext
    padded: bool
    sealed: bytes  # ciphertext and tag
    nonce_counter: bytes


def parse_rtp(datagram: bytes) -> RtpPacket | None:
    """The opus voice packet in ``datagram``, or None for anything else on the socket."""
    # The IP discovery reply starts with 0x00 0x02, so it fails the version check.
    if len(datagram) < RTP_HEADER_BYTES or datagram[0] >> 6 != 2:
        return None
    if datagram[1] in RTCP_PACKET_TYPES or datagram[1] & 0x7F != OPUS_PAYLOAD_TYPE:
        return None
    header_end = RTP_HEADER_BYTES + 4 * (datagram[0] & 0x0F)
    extension_bytes = 0
    if datagram[0] & 0x10 and len(datagram) >= header_end + 4:
        # RFC 8285: 2 bytes profile (0xBEDE), 2 bytes body length in 32-bit words
        extension_bytes = 4 * struct.unpack_from(">H", datagram, header_end + 2)[0]
        header_end += 4
    if len(datagram) < header_end + AEAD_TAG_BYTES + NONCE_COUNTER_BYTES:
        return None
    sequence, timestamp, ssrc = struct.unpack_from(">HII", datagram, 2)
    return RtpPacket(
        ssrc=ssrc,
        sequence=sequence,
        timestamp=timestamp,
        header=bytes(datagram[:header_end]),
        extension_bytes=extension_bytes,
        padded=bool(datagram[0] & 0x20),
        sealed=bytes(datagram[header_end:-NONCE_COUNTER_BYTES]),
        nonce_counter=bytes(datagram[-NONCE_COUNTER_BYTES:]),
    )


class TransportError(Exception):
    """A packet that does not open: tampered, sealed with another key, or an unknown mode."""


class TransportCipher:
    """Opens the rtpsize packets of one voice session (one mode and secret key)."""

    def __init__(self, mode: str, secret_key: bytes) -> None:
        try:
            if mode == XCHACHA20_RTPSIZE:
                self._open = self._xchacha(nacl.secret.Aead(secret_key))
            elif mode == AES256_GCM_RTPSIZE:
                self._open = self._aes_gcm(AESGCM(secret_key))
            else:
                raise TransportError(f"unsupported transport encryption mode {mode!r}")
        except (ValueError, nacl.exceptions.CryptoError) as exc:
            raise TransportError(f"unusable secret key: {exc}") from None

    def open(self, packet: RtpPacket) -> bytes:
        """The packet's payload: the opus frame, still DAVE-encrypted on an E2EE call."""
        try:
            plaintext = self._open(packet)
        except (nacl.exceptions.CryptoError, InvalidTag):
            raise TransportError("packet does not authenticate") from None
        payload = plaintext[packet.extension_bytes:]
        if packet.padded and payload:
            payload = payload[: len(payload) - payload[-1]]
        return payload

    @staticmethod
    def _xchacha(box: nacl.secret.Aead) -> Callable[[RtpPacket], bytes]:
        def open_packet(packet: RtpPacket) -> bytes:
            nonce = packet.nonce_counter + bytes(24 - NONCE_COUNTER_BYTES)
            return box.decrypt(packet.sealed, packet.header, nonce)

        return open_packet

    @staticmethod
    def _aes_gcm(gcm: AESGCM) -> Callable[[RtpPacket], bytes]:
        def open_packet(packet: RtpPacket) -> bytes:
            nonce = packet.nonce_counter + bytes(12 - NONCE_COUNTER_BYTES)
            return gcm.decrypt(nonce, packet.sealed, packet.header)

        return open_packet


class VoiceConnection(Protocol):
    """What the receive path reads from discord.py's ``VoiceConnectionState``, on every
    packet: the key and mode change on reconnect, the DAVE session on transitions."""

    mode: Any
    secret_key: Any
    dave_session: davey.DaveSession | None
    dave_protocol_version: int


@dataclass(frozen=True, slots=True)
class VoicePacket:
    """One opus frame a speaker sent, in the clear."""

    user_id: int
    sequence: int
    timestamp: int
    opus: bytes
    received_ns: int  # unix ns at which the datagram was read from the socket


@dataclass(slots=True)
class _OpenedPacket:
    """A packet after transport decryption."""

    sequence: int
    timestamp: int
    payload: bytes  # transport-decrypted, maybe still DAVE-encrypted
    received_ns: int


@dataclass
class ReceiveCounters:
    """What happened to received datagrams, for export as metrics."""

    received: int = 0  # datagrams read from the voice socket
    ignored: int = 0  # RTCP, IP discovery replies, other payload types, runts
    transport_failed: int = 0  # did not open with the session key (or no key yet)
    decrypted: int = 0  # DAVE frames decrypted
    passthrough: int = 0  # frames without DAVE on a DAVE call, delivered as they came
    silence: int = 0  # opus silence frames
    dave_failed: int = 0  # DAVE decryption failed; frame dropped
    identified: int = 0  # SSRCs whose user the DAVE key told before op 5 did
    unknown_ssrc_dropped: int = 0  # held for an SSRC whose user never became known
    overflow_dropped: int = 0  # the event loop fell behind the socket
    delivered: int = 0  # frames handed to on_packet


class VoicePacketProcessor:
    """The receive path without sockets or threads: datagrams and speaker ids in, opus out.

    ``connection`` is read on every packet (mode, secret key, DAVE session and version).
    Packets from an SSRC without a user are held, at most ``hold_packets`` per SSRC for
    ``hold_ns``, and for at most ``hold_ssrcs`` SSRCs; what is given up is counted.
    """

    def __init__(
        self,
        connection: VoiceConnection,
        *,
        counters: ReceiveCounters | None = None,
        clock: Callable[[], int] = time.time_ns,
        hold_packets: int = 50,
        hold_ns: int = 1_000_000_000,
        hold_ssrcs: int = 16,
    ) -> None:
        self._connection = connection
        self.counters = counters if counters is not None else ReceiveCounters()
        self._clock = clock
        self._hold_packets, self._hold_ns, self._hold_ssrcs = hold_packets, hold_ns, hold_ssrcs
        self.users_by_ssrc: dict[int, int] = {}
        self.users_in_call: set[int] = set()
        self._held: dict[int, deque[_OpenedPacket]] = {}
        self._tried: dict[int, tuple[int | None, frozenset[int]]] = {}
        self._left: set[int] = set()  # op 13 said so, and nothing has brought them back
        self._cipher: tuple[str, bytes, TransportCipher] | None = None

    def feed(self, datagram: bytes, received_ns: int) -> list[VoicePacket]:
        """One datagram from the voice socket: the frame in it, or nothing."""
        self.counters.received += 1
        packet = parse_rtp(datagram)
        if packet is None:
            self.counters.ignored += 1
            return []
        try:
            payload = self._transport().open(packet)
        except TransportError:
            self.counters.transport_failed += 1
            return []
        opened = _OpenedPacket(packet.sequence, packet.timestamp, payload, received_ns)
        user_id = self.users_by_ssrc.get(packet.ssrc)
        if user_id is not None:
            return self._open_e2ee(user_id, [opened])
        found = self._identify(packet.ssrc, opened)
        if found is None:
            self._hold(packet.ssrc, opened)
            return []
        user_id, opus = found
        self.counters.identified += 1
        self.counters.decrypted += 1
        self.counters.delivered += 1
        log.info("voice SSRC %s identified by its DAVE key (no op 5 for it yet)", packet.ssrc)
        held = self._map(user_id, packet.ssrc)  # what op 5 would have said
        return [*held, VoicePacket(user_id, opened.sequence, opened.timestamp, opus,
                                   opened.received_ns)]

    def _identify(self, ssrc: int, packet: _OpenedPacket) -> tuple[int, bytes] | None:
        """Whose SSRC this is when op 5 has not said (yet): the call member whose DAVE key
        opens the frame (a wrong member's key fails its authentication). Only a DAVE frame
        can tell; each SSRC is tried once per group epoch and set of candidates."""
        session = self._dave_session()
        if session is None or not packet.payload.endswith(DAVE_MAGIC_MARKER):
            return None
        try:
            members = {int(user) for user in session.get_user_ids()}
        except (ValueError, TypeError):
            return None
        candidates = (members | self.users_in_call) - self._left - {session.user_id}
        attempt = (session.epoch, frozenset(candidates))
        if not candidates or self._tried.get(ssrc) == attempt:
            return None
        if len(self._tried) >= 4 * self._hold_ssrcs:
            self._tried.clear()
        self._tried[ssrc] = attempt
        known = set(self.users_by_ssrc.values())  # likelier someone not heard yet
        for user_id in sorted(candidates, key=lambda user: (user in known, user)):
            try:
                return user_id, session.decrypt(user_id, davey.MediaType.audio, packet.payload)
            except ValueError:  # not this member's key
                continue
        return None

    def on_voice_ws_message(self, msg: dict[str, Any]) -> list[VoicePacket]:
        """A JSON voice websocket message: ops 4, 5, 11, 12 and 13 matter here. Returns the
        held packets an op 5 (or 12) makes deliverable; raises KeyError or ValueError if ``msg`` is
        malformed."""
        op, data = msg.get("op"), msg.get("d") or {}
        if op == DiscordVoiceWebSocket.SPEAKING:
            return self.speaker(int(data["user_id"]), int(data["ssrc"]))
        if op == DiscordVoiceWebSocket.CLIENT_CONNECT and data.get("audio_ssrc"):
            # older voice gateways announce a joiner's SSRC here too
            return self.speaker(int(data["user_id"]), int(data["audio_ssrc"]))
        if op == DiscordVoiceWebSocket.CLIENTS_CONNECT:
            joined = {int(user_id) for user_id in data["user_ids"]}
            self.users_in_call |= joined
            self._left -= joined
        elif op == DiscordVoiceWebSocket.CLIENT_DISCONNECT:
            self.forget_user(int(data["user_id"]))
        elif op == DiscordVoiceWebSocket.SESSION_DESCRIPTION:
            self._cipher = None
            log.info("voice session: mode %s, DAVE protocol version %s",
                     data.get("mode"), data.get("dave_protocol_version"))
        return []

    def speaker(self, user_id: int, ssrc: int) -> list[VoicePacket]:
        """``ssrc`` belongs to ``user_id`` (op 5): the packets held for it, opened."""
        self._expire_held(self._clock())
        return self._map(user_id, ssrc)

    def _map(self, user_id: int, ssrc: int) -> list[VoicePacket]:
        """``ssrc`` is ``user_id``'s from now on: the packets held for it, opened."""
        self.users_by_ssrc[ssrc] = user_id
        self.users_in_call.add(user_id)
        self._left.discard(user_id)
        self._tried.pop(ssrc, None)
        return self._open_e2ee(user_id, self._held.pop(ssrc, ()))

    def forget_user(self, user_id: int) -> None:
        """The user left the call (op 13): their SSRCs mean nothing any more."""
        self.users_in_call.discard(user_id)
        self._left.add(user_id)
        for ssrc in [s for s, user in self.users_by_ssrc.items() if user == user_id]:
            del self.users_by_ssrc[ssrc]

    def _transport(self) -> TransportCipher:
        mode, secret_key = self._connection.mode, self._connection.secret_key
        if not mode or not secret_key:  # discord.py's MISSING before op 4 is falsy
            raise TransportError("no session description yet")
        key = bytes(secret_key)
        if self._cipher is None or self._cipher[:2] != (mode, key):
            self._cipher = (mode, key, TransportCipher(mode, key))
        return self._cipher[2]

    def _dave_session(self) -> davey.DaveSession | None:
        """The connection's DAVE session, when the call is end-to-end encrypted."""
        connection = self._connection
        return connection.dave_session if connection.dave_protocol_version > 0 else None

    def _open_e2ee(self, user_id: int, payloads: Iterable[_OpenedPacket]) -> list[VoicePacket]:
        session = self._dave_session()
        packets = []
        for packet in payloads:
            opus = packet.payload
            if opus == OPUS_SILENCE:
                self.counters.silence += 1
            elif session is None:
                pass  # not an E2EE call
            elif not opus.endswith(DAVE_MAGIC_MARKER):
                self.counters.passthrough += 1
            else:
                try:
                    opus = session.decrypt(user_id, davey.MediaType.audio, opus)
                except ValueError:  # davey raises every failure as ValueError
                    self.counters.dave_failed += 1
                    continue
                self.counters.decrypted += 1
            self.counters.delivered += 1
            packets.append(VoicePacket(user_id, packet.sequence, packet.timestamp, opus,
                                       packet.received_ns))
        return packets

    def _hold(self, ssrc: int, packet: _OpenedPacket) -> None:
        self._expire_held(packet.received_ns)
        queue = self._held.get(ssrc)
        if queue is None:
            if len(self._held) >= self._hold_ssrcs:  # give up on the longest-waiting SSRC
                oldest = next(iter(self._held))
                self.counters.unknown_ssrc_dropped += len(self._held.pop(oldest))
            queue = self._held[ssrc] = deque()
        if len(queue) >= self._hold_packets:
            queue.popleft()
            self.counters.unknown_ssrc_dropped += 1
        queue.append(packet)

    def _expire_held(self, now_ns: int) -> None:
        for ssrc, queue in list(self._held.items()):
            while queue and now_ns - queue[0].received_ns > self._hold_ns:
                queue.popleft()
                self.counters.unknown_ssrc_dropped += 1
            if not queue:
                del self._held[ssrc]


class VoiceReceiver:
    """Receives a voice connection's audio and hands opus frames to the event loop.

    Datagrams come from discord.py's socket reader thread (``add_socket_listener``);
    speaker ids from the voice websocket hook, ``on_voice_ws_message``. The receiver keeps
    the SSRC map from construction on, so ``start`` can come any time after connecting.
    At most ``max_queued`` datagrams wait for the loop; beyond that they are dropped.
    """

    def __init__(
        self,
        connection: VoiceConnectionState,
        loop: asyncio.AbstractEventLoop,
        *,
        clock: Callable[[], int] = time.time_ns,
        max_queued: int = 500,
    ) -> None:
        self.counters = ReceiveCounters()
        self.processor = VoicePacketProcessor(connection, counters=self.counters, clock=clock)
        self._connection, self._loop, self._clock = connection, loop, clock
        self._inbox: deque[tuple[bytes, int]] = deque()
        self._max_queued = max_queued
        self._on_packet: OnPacket | None = None

    def start(self, on_packet: OnPacket) -> None:
        """Deliver every received frame to ``on_packet`` (on the loop) from now on."""
        if self._on_packet is not None:
            raise RuntimeError("this voice connection is already being received")
        self._on_packet = on_packet
        self._connection.add_socket_listener(self._on_datagram)

    def stop(self) -> None:
        self._connection.remove_socket_listener(self._on_datagram)
        self._on_packet = None
        self._inbox.clear()

    async def on_voice_ws_message(self, ws: DiscordVoiceWebSocket, msg: dict[str, Any]) -> None:
        """discord.py's websocket hook: runs on the loop after its own handling of ``msg``."""
        try:
            packets = self.processor.on_voice_ws_message(msg)
        except (KeyError, TypeError, ValueError):
            log.warning("malformed voice websocket op %s ignored", msg.get("op"))
            return
        self._deliver(packets)

    def _on_datagram(self, datagram: bytes) -> None:
        """On the socket reader thread: stamp, queue and wake the loop. Never raises."""
        received_ns = self._clock()
        if len(self._inbox) >= self._max_queued:
            self.counters.overflow_dropped += 1
            return
        self._inbox.append((datagram, received_ns))
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: the bot is shutting down
            self._inbox.clear()

    def _drain(self) -> None:
        while self._inbox:
            datagram, received_ns = self._inbox.popleft()
            self._deliver(self.processor.feed(datagram, received_ns))

    def _deliver(self, packets: list[VoicePacket]) -> None:
        on_packet = self._on_packet
        if on_packet is None:
            return
        for packet in packets:
            try:
                on_packet(packet.user_id, packet.sequence, packet.timestamp, packet.opus,
                          packet.received_ns)
            except Exception:
                log.exception("on_packet failed for user %s", packet.user_id)


class ReceivingConnectionState(VoiceConnectionState):
    """discord.py's voice connection state, with a socket reader that follows a new socket.

    discord.py's reader thread waits in ``select()`` on the voice socket for up to 30 s. It
    only waits while a listener is registered, and ours always is, so when a reconnect
    closes the socket and makes a new one, the reader sits on the closed one and the new
    connection's IP discovery times out (shown by tests/integration/test_edge_discord.py).
    So each new socket gets a new reader with the same listeners. The old one is pointed at
    a retired socket, so it cannot take a datagram of the new socket (the IP discovery
    reply, say) for the old listeners when it wakes up; it ends then.
    """

    def _create_socket(self) -> None:
        super()._create_socket()
        old = self._socket_reader
        if not old.is_alive() or not old._callbacks:  # idle: not waiting on the old socket
            return
        reader = SocketReader(self, start_paused=False)
        reader._callbacks = list(old._callbacks)  # the old one clears its own list as it ends
        self._socket_reader = reader
        old.state = _RETIRED  # type: ignore[assignment]
        old.stop()
        reader.start()


class _RetiredSocket:
    """What an old socket reader sees once replaced: ``select()`` and ``recv()`` fail with
    OSError, which discord.py's reader takes as a closed socket, and it ends."""

    def fileno(self) -> int:
        raise OSError("this voice socket reader was replaced")

    def recv(self, size: int) -> bytes:
        raise OSError("this voice socket reader was replaced")


class _Retired:
    socket = _RetiredSocket()


_RETIRED = _Retired()


class ReceivingVoiceClient(discord.VoiceClient):
    """A ``discord.VoiceClient`` that can also listen.

    ``vc = await channel.connect(cls=ReceivingVoiceClient, self_deaf=False)``, then
    ``vc.receiver.start(on_packet)``. A deafened bot is sent no audio.
    """

    receiver: VoiceReceiver

    def create_connection_state(self) -> VoiceConnectionState:
        state = ReceivingConnectionState(self, hook=self._on_voice_ws_message)
        self.receiver = VoiceReceiver(state, self.loop)
        return state

    async def drop(self) -> None:
        """Disconnect without waiting for Discord to confirm it. For a connection discord.py
        has forgotten (a new gateway session clears its voice clients), whose confirmation
        would never reach it: ``disconnect()`` would wait its whole timeout."""
        self.receiver.stop()
        self.stop()
        await self._connection.disconnect(force=True, wait=False)

    async def _on_voice_ws_message(self, ws: DiscordVoiceWebSocket, msg: dict[str, Any]) -> None:
        await self.receiver.on_voice_ws_message(ws, msg)
