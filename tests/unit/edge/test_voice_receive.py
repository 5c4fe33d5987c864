"""The Discord edge's receive path (voice_receive).

Packets are made by discord.py 2.7.1's own send path (``VoiceClient.send_audio_packet``:
DAVE encryption with the sender's davey session, RTP header, transport sealing) by a
player in a real DAVE group that the fake voice gateway built. The bot's side must give
back the exact opus. discord.py seals only xchacha20, so the AES-GCM sender adds the
missing ``_encrypt_aead_aes256_gcm_rtpsize`` written the same way. Packets with CSRCs,
header extensions or padding, which discord.py never sends, are sealed by ``seal_rtp``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import davey
import discord
import nacl.secret
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from discord.gateway import DiscordVoiceWebSocket as VoiceWS
from discord.utils import MISSING

from glyphoxa_audio.opus import OpusDecoder, OpusEncoder, frames_of
from glyphoxa_discord_edge.loopback import LoopbackDaveGateway
from glyphoxa_discord_edge.voice_receive import (
    AES256_GCM_RTPSIZE,
    OPUS_PAYLOAD_TYPE,
    OPUS_SILENCE,
    XCHACHA20_RTPSIZE,
    ReceivingVoiceClient,
    VoicePacket,
    VoicePacketProcessor,
    VoiceReceiver,
    parse_rtp,
)

pytestmark = pytest.mark.unit

CHANNEL_ID = 927310423890473011
BOT_ID = 158049329150427136
PLAYER_ID = 158533742254751744
STRANGER_ID = 222222222222222222
PLAYER_SSRC = 4242
MODES = [XCHACHA20_RTPSIZE, AES256_GCM_RTPSIZE]


def opus_frame(size: int = 60) -> bytes:
    return b"\xfc" + os.urandom(size)  # a CELT TOC byte and a body: opus enough for the path


class PlayerVoiceClient(discord.VoiceClient):
    """A player's client. discord.py 2.7.1 seals only xchacha20; AES-GCM is added here,
    written the way discord.py writes its xchacha20 method."""

    def _encrypt_aead_aes256_gcm_rtpsize(self, header: bytes, data: bytes) -> bytes:
        nonce = bytearray(12)
        nonce[:4] = struct.pack(">I", self._incr_nonce)
        self.checked_add("_incr_nonce", 1, 4294967295)
        sealed = AESGCM(bytes(self.secret_key)).encrypt(bytes(nonce), bytes(data), bytes(header))
        return header + sealed + nonce[:4]


class SentDatagrams(list):
    """Stands in for the UDP socket: discord.py's ``send_packet`` calls ``sendall``."""

    def sendall(self, datagram: bytes) -> None:
        self.append(bytes(datagram))


MakeClient = Callable[..., discord.VoiceClient]


@pytest.fixture
def voice_clients() -> Iterator[MakeClient]:
    """Real discord.py voice clients on stub Discord clients; their reader threads stop."""
    made: list[discord.VoiceClient] = []

    def make(cls: type[discord.VoiceClient], user_id: int, loop=None) -> discord.VoiceClient:
        client = SimpleNamespace(_connection=SimpleNamespace(loop=loop, user=SimpleNamespace(id=user_id)))
        vc = cls(client, SimpleNamespace(id=CHANNEL_ID))
        made.append(vc)
        return vc

    yield make
    for vc in made:
        vc._connection._socket_reader.stop()


def player(make: MakeClient, session: davey.DaveSession, mode: str, key: bytes, *,
           dave: bool = True, ssrc: int = PLAYER_SSRC) -> discord.VoiceClient:
    vc = make(PlayerVoiceClient, session.user_id)
    state = vc._connection
    state.ssrc, state.mode, state.secret_key = ssrc, mode, list(key)
    state.dave_session, state.dave_protocol_version = session, 1 if dave else 0
    state.socket = SentDatagrams()
    return vc


def send(vc: discord.VoiceClient, opus: bytes) -> bytes:
    """The datagram discord.py's public send path makes of ``opus``."""
    vc.send_audio_packet(opus, encode=False)
    return vc._connection.socket[-1]


def bot_processor(session: davey.DaveSession | None, mode: str, key: bytes, *,
                  dave_version: int = 1, **kwargs) -> VoicePacketProcessor:
    connection = SimpleNamespace(mode=mode, secret_key=list(key), dave_session=session,
                                 dave_protocol_version=dave_version)
    return VoicePacketProcessor(connection, **kwargs)


def seal_rtp(mode: str, key: bytes, payload: bytes, *, seq: int = 1, ssrc: int = PLAYER_SSRC,
             counter: int = 0, csrcs: tuple[int, ...] = (), extension: bytes = b"",
             padding: int = 0) -> bytes:
    """A datagram as Discord relays it: the extension body and padding are sealed."""
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension else 0) | len(csrcs)
    header = bytes([first, OPUS_PAYLOAD_TYPE]) + struct.pack(">HII", seq, seq * 960, ssrc)
    header += b"".join(struct.pack(">I", csrc) for csrc in csrcs)
    if extension:
        header += b"\xbe\xde" + struct.pack(">H", len(extension) // 4)
    plaintext = extension + payload + (bytes(padding - 1) + bytes([padding]) if padding else b"")
    nonce = struct.pack(">I", counter)
    if mode == XCHACHA20_RTPSIZE:
        sealed = nacl.secret.Aead(key).encrypt(plaintext, header, nonce + bytes(20)).ciphertext
    else:
        sealed = AESGCM(key).encrypt(nonce + bytes(8), plaintext, header)
    return header + sealed + nonce


@pytest.fixture
def call() -> dict[int, davey.DaveSession]:
    """The bot and a player in one DAVE group."""
    return LoopbackDaveGateway(CHANNEL_ID).create_group(BOT_ID, PLAYER_ID)


def received(packets: list[VoicePacket]) -> list[tuple[int, int, int, bytes]]:
    return [(p.user_id, p.sequence, p.timestamp, p.opus) for p in packets]


@pytest.mark.parametrize("mode", MODES)
def test_discord_py_send_path_decrypts_to_the_exact_opus(mode, call, voice_clients):
    key = os.urandom(32)
    alice = player(voice_clients, call[PLAYER_ID], mode, key)
    bot = bot_processor(call[BOT_ID], mode, key)
    bot.speaker(PLAYER_ID, PLAYER_SSRC)
    frames = [opus_frame(size) for size in (20, 80, 300)]
    datagrams = [send(alice, frame) for frame in frames]

    got = [packet for i, d in enumerate(datagrams) for packet in bot.feed(d, received_ns=i)]

    assert received(got) == [(PLAYER_ID, i + 1, i * 960, f) for i, f in enumerate(frames)]
    assert [p.received_ns for p in got] == [0, 1, 2]
    assert all(frame not in d for frame, d in zip(frames, datagrams))
    assert (bot.counters.decrypted, bot.counters.passthrough, bot.counters.delivered) == (3, 0, 3)


def test_real_opus_audio_survives_dave_and_transport_encryption(call, voice_clients):
    rate = 48_000
    t = np.arange(rate) / rate  # 1 s chirp from 200 Hz to 2 kHz
    chirp = (0.3 * 32767 * np.sin(2 * np.pi * (200 * t + 900 * t**2))).astype(np.int16)
    encoder = OpusEncoder()
    sent = [encoder.encode(f) for f in frames_of(np.repeat(chirp[:, None], 2, axis=1),
                                                 encoder.frame_samples)]
    key = os.urandom(32)
    alice = player(voice_clients, call[PLAYER_ID], XCHACHA20_RTPSIZE, key)
    bot = bot_processor(call[BOT_ID], XCHACHA20_RTPSIZE, key)
    bot.speaker(PLAYER_ID, PLAYER_SSRC)

    got = [p.opus for frame in sent for p in bot.feed(send(alice, frame), 0)]

    assert got == sent
    decoder = OpusDecoder(16_000)
    heard = np.concatenate([decoder.decode(p) for p in got]).astype(float)
    source = chirp[::3].astype(float)  # 16 kHz; the chirp stays far below 8 kHz
    window = 15_000
    correlation = max(
        np.dot(heard[lag:lag + window], source[:window])
        / (np.linalg.norm(heard[lag:lag + window]) * np.linalg.norm(source[:window]))
        for lag in range(400)  # opus delays by a few ms
    )
    assert correlation > 0.9
    assert 0.7 < np.sqrt(np.mean(heard**2)) / np.sqrt(np.mean(source**2)) < 1.3


def test_frames_sent_without_dave_and_silence_pass_through(call, voice_clients):
    key = os.urandom(32)
    plain_sender = player(voice_clients, call[PLAYER_ID], XCHACHA20_RTPSIZE, key, dave=False)
    bot = bot_processor(call[BOT_ID], XCHACHA20_RTPSIZE, key)
    bot.speaker(PLAYER_ID, PLAYER_SSRC)
    frame = opus_frame()

    assert received(bot.feed(send(plain_sender, frame), 0)) == [(PLAYER_ID, 1, 0, frame)]
    e2ee_sender = player(voice_clients, call[PLAYER_ID], XCHACHA20_RTPSIZE, key)
    assert [p.opus for p in bot.feed(send(e2ee_sender, OPUS_SILENCE), 0)] == [OPUS_SILENCE]
    assert (bot.counters.passthrough, bot.counters.silence, bot.counters.decrypted) == (1, 1, 0)


def test_a_call_without_dave_delivers_the_transport_payload(voice_clients):
    key = os.urandom(32)
    lone = LoopbackDaveGateway(CHANNEL_ID).session(PLAYER_ID)
    alice = player(voice_clients, lone, AES256_GCM_RTPSIZE, key, dave=False)
    bot = bot_processor(None, AES256_GCM_RTPSIZE, key, dave_version=0)
    bot.speaker(PLAYER_ID, PLAYER_SSRC)
    frame = opus_frame()

    assert [p.opus for p in bot.feed(send(alice, frame), 0)] == [frame]
    assert (bot.counters.passthrough, bot.counters.decrypted, bot.counters.delivered) == (0, 0, 1)


def test_rtcp_ip_discovery_and_other_payload_types_are_ignored(call):
    key = os.urandom(32)
    bot = bot_processor(call[BOT_ID], XCHACHA20_RTPSIZE, key)
    bot.speaker(PLAYER_ID, PLAYER_SSRC)
    receiver_report = b"\x81\xc9\x00\x07" + bytes(28)
    sender_report = b"\x80\xc8\x00\x06" + bytes(24)
    discovery_reply = struct.pack(">HHI", 2, 70, PLAYER_SSRC) + b"203.0.113.7".ljust(64, b"\0") + b"\xc3\x50"
    not_opus = bytearray(seal_rtp(XCHACHA20_RTPSIZE, key, opus_frame()))
    not_opus[1] = 96
    datagrams = [receiver_report, sender_report, discovery_reply, bytes(not_opus), b"\x80\x78", b""]

    assert len(discovery_reply) == 74
    assert all(parse_rtp(d) is None for d in datagrams)
    assert all(bot.feed(d, 0) == [] for d in datagrams)
    assert (bot.counters.received, bot.counters.ignored, bot.counters.transport_failed) == (6, 6, 0)


@pytest.mark.parametrize("mode", MODES)
def test_extensions_csrcs_and_padding_are_skipped(mode, call):
    key = os.urandom(32)
    bot = bot_processor(call[BOT_ID], mode, key)
    bot.speaker(PLAYER_ID, PLAYER_SSRC)
    frame = opus_frame()
    audio_level = bytes([0x10, 0x85, 0x00, 0x00])  # one-byte element: id 1, 1 byte; padding
    extensions = audio_level + bytes([0x32, 1, 2, 3])  # and id 3 with 3 bytes
    datagrams = [
        seal_rtp(mode, key, call[PLAYER_ID].encrypt_opus(frame), seq=1, extension=audio_level),
        seal_rtp(mode, key, call[PLAYER_ID].encrypt_opus(frame), seq=2, counter=1,
                 csrcs=(7, 8), extension=extensions),
        seal_rtp(mode, key, call[PLAYER_ID].encrypt_opus(frame), seq=3, counter=2,
                 extension=audio_level, padding=4),
    ]

    assert parse_rtp(datagrams[1]).header == datagrams[1][:12 + 8 + 4]
    got = [packet for d in datagrams for packet in bot.feed(d, 0)]
    assert [(p.sequence, p.opus) for p in got] == [(1, frame), (2, frame), (3, frame)]
    assert bot.counters.decrypted == 3


@pytest.mark.parametrize("mode", MODES)
def test_tampered_packets_and_wrong_keys_are_counted_not_raised(mode, call, voice_clients):
    key = os.urandom(32)
    alice = player(voice_clients, call[PLAYER_ID], mode, key)
    bot = bot_processor(call[BOT_ID], mode, key)
    bot.speaker(PLAYER_ID, PLAYER_SSRC)
    tampered = bytearray(send(alice, opus_frame()))
    tampered[20] ^= 0x01

    other_key = bot_processor(call[BOT_ID], mode, os.urandom(32))

    assert bot.feed(bytes(tampered), 0) == []
    assert other_key.feed(send(alice, opus_frame()), 0) == []
    assert bot.counters.transport_failed == other_key.counters.transport_failed == 1

    dave_frame = bytearray(call[PLAYER_ID].encrypt_opus(opus_frame()))
    dave_frame[3] ^= 0x01  # inside the DAVE ciphertext, the marker intact
    assert bot.feed(seal_rtp(mode, key, bytes(dave_frame)), 0) == []
    assert bot.counters.dave_failed == 1


def test_dave_frames_from_outside_the_group_fail_and_are_counted(call):
    key = os.urandom(32)
    elsewhere = LoopbackDaveGateway(CHANNEL_ID).create_group(STRANGER_ID, PLAYER_ID)
    outsider, other_group = elsewhere[STRANGER_ID], elsewhere[PLAYER_ID]
    bot = bot_processor(call[BOT_ID], XCHACHA20_RTPSIZE, key)
    bot.speaker(STRANGER_ID, 777)
    bot.speaker(PLAYER_ID, PLAYER_SSRC)

    frame = opus_frame()
    assert bot.feed(seal_rtp(XCHACHA20_RTPSIZE, key, outsider.encrypt_opus(frame), ssrc=777), 0) == []
    assert bot.feed(seal_rtp(XCHACHA20_RTPSIZE, key, other_group.encrypt_opus(frame)), 0) == []
    assert bot.counters.dave_failed == 2


@pytest.mark.parametrize("missing", ["key", "mode"])
def test_packets_before_the_session_description_fail_transport(missing, call):
    key = os.urandom(32)
    bot = bot_processor(call[BOT_ID], XCHACHA20_RTPSIZE, key)
    if missing == "key":
        bot._connection.secret_key = MISSING
    else:
        bot._connection.mode = "xsalsa20_poly1305"  # a mode we do not open

    assert bot.feed(seal_rtp(XCHACHA20_RTPSIZE, key, opus_frame()), 0) == []
    assert bot.counters.transport_failed == 1


def test_an_unknown_ssrc_is_held_until_its_speaking_op_arrives(call):
    """Frames that cannot name their sender (sent without DAVE) wait for op 5."""
    key = os.urandom(32)
    now = [0]
    bot = bot_processor(call[BOT_ID], XCHACHA20_RTPSIZE, key, clock=lambda: now[0])
    frames = [opus_frame() for _ in range(3)]
    for i, frame in enumerate(frames):
        datagram = seal_rtp(XCHACHA20_RTPSIZE, key, frame, seq=10 + i, counter=i)
        assert bot.feed(datagram, received_ns=i) == []
    now[0] = 500_000_000

    got = bot.on_voice_ws_message(
        {"op": VoiceWS.SPEAKING, "d": {"user_id": str(PLAYER_ID), "ssrc": PLAYER_SSRC, "speaking": 1}}
    )

    assert [(p.user_id, p.sequence, p.opus, p.received_ns) for p in got] == [
        (PLAYER_ID, 10 + i, frame, i) for i, frame in enumerate(frames)
    ]
    assert bot.users_by_ssrc == {PLAYER_SSRC: PLAYER_ID}
    assert bot.counters.unknown_ssrc_dropped == 0


def test_a_dave_frame_names_its_sender_when_op_5_has_not():
    """The members' keys tell who sent a frame: each SSRC is mapped by the one key that opens
    it, held frames included, with no op 5 at all; a later op 5 agrees."""
    key = os.urandom(32)
    third = 333333333333333333
    group = LoopbackDaveGateway(CHANNEL_ID).create_group(BOT_ID, PLAYER_ID, third)
    bot = bot_processor(group[BOT_ID], XCHACHA20_RTPSIZE, key)
    bot.on_voice_ws_message({"op": VoiceWS.CLIENTS_CONNECT,
                             "d": {"user_ids": [str(PLAYER_ID), str(third)]}})
    silence = seal_rtp(XCHACHA20_RTPSIZE, key, OPUS_SILENCE, seq=1, ssrc=7, counter=0)
    assert bot.feed(silence, 0) == []  # silence cannot tell: held
    theirs = [opus_frame() for _ in range(3)]
    got = []
    for i, frame in enumerate(theirs):
        datagram = seal_rtp(XCHACHA20_RTPSIZE, key, group[third].encrypt_opus(frame),
                            seq=2 + i, ssrc=7, counter=1 + i)
        got += bot.feed(datagram, 1 + i)
    mine = opus_frame()
    got += bot.feed(seal_rtp(XCHACHA20_RTPSIZE, key, group[PLAYER_ID].encrypt_opus(mine),
                             seq=50, ssrc=8, counter=9), 9)

    assert [(p.user_id, p.sequence, p.opus) for p in got] == [
        (third, 1, OPUS_SILENCE), *((third, 2 + i, f) for i, f in enumerate(theirs)),
        (PLAYER_ID, 50, mine)]
    assert bot.users_by_ssrc == {7: third, 8: PLAYER_ID}
    c = bot.counters
    assert (c.identified, c.decrypted, c.silence, c.dave_failed) == (2, 4, 1, 0)
    assert bot.on_voice_ws_message({"op": VoiceWS.SPEAKING, "d": {
        "user_id": str(third), "ssrc": 7, "speaking": 1}}) == []
    assert bot.users_by_ssrc == {7: third, 8: PLAYER_ID}


def test_a_frame_no_member_key_opens_is_tried_once_per_epoch(call):
    """A stranger's frames (outside the group) cannot be identified: they are held, and the
    members' keys are not tried again for every packet."""
    key = os.urandom(32)
    bot = bot_processor(call[BOT_ID], XCHACHA20_RTPSIZE, key)
    outsider = LoopbackDaveGateway(CHANNEL_ID).create_group(STRANGER_ID, PLAYER_ID)
    tries = []
    real = call[BOT_ID]

    class Counting:
        user_id, epoch = real.user_id, real.epoch

        def get_user_ids(self):  # type: ignore[no-untyped-def]
            return real.get_user_ids()

        def decrypt(self, user_id, media, payload):  # type: ignore[no-untyped-def]
            tries.append(user_id)
            return real.decrypt(user_id, media, payload)

    bot._connection.dave_session = Counting()
    for i in range(5):
        frame = outsider[STRANGER_ID].encrypt_opus(opus_frame())
        assert bot.feed(seal_rtp(XCHACHA20_RTPSIZE, key, frame, seq=i, ssrc=9, counter=i), i) == []
    assert tries == [PLAYER_ID]  # once, not five times
    assert bot.counters.identified == 0 and 9 not in bot.users_by_ssrc


def test_held_packets_are_bounded_and_expire():
    key = os.urandom(32)
    now = [0]
    bot = bot_processor(None, XCHACHA20_RTPSIZE, key, dave_version=0, clock=lambda: now[0],
                        hold_packets=50, hold_ns=1_000_000_000, hold_ssrcs=2)
    for seq in range(60):  # 10 too many
        bot.feed(seal_rtp(XCHACHA20_RTPSIZE, key, opus_frame(), seq=seq), received_ns=seq)
    assert bot.counters.unknown_ssrc_dropped == 10
    assert [p.sequence for p in bot.speaker(PLAYER_ID, PLAYER_SSRC)] == list(range(10, 60))

    for ssrc in (1, 2, 3):  # only two SSRCs are held: the longest-waiting one goes
        bot.feed(seal_rtp(XCHACHA20_RTPSIZE, key, opus_frame(), ssrc=ssrc), received_ns=0)
    assert bot.counters.unknown_ssrc_dropped == 11
    assert bot.speaker(STRANGER_ID, 1) == []
    now[0] = 1_500_000_000  # past the hold time
    assert bot.speaker(STRANGER_ID, 2) == []
    assert bot.counters.unknown_ssrc_dropped == 13


def test_client_disconnect_forgets_the_user(call):
    key = os.urandom(32)
    bot = bot_processor(call[BOT_ID], XCHACHA20_RTPSIZE, key)
    bot.on_voice_ws_message({"op": VoiceWS.CLIENTS_CONNECT, "d": {"user_ids": [str(PLAYER_ID)]}})
    bot.on_voice_ws_message({"op": VoiceWS.CLIENT_CONNECT, "d": {
        "user_id": str(STRANGER_ID), "audio_ssrc": 777, "video_ssrc": 0}})
    bot.speaker(PLAYER_ID, PLAYER_SSRC)
    assert bot.users_in_call == {PLAYER_ID, STRANGER_ID}
    assert bot.users_by_ssrc == {PLAYER_SSRC: PLAYER_ID, 777: STRANGER_ID}

    bot.on_voice_ws_message({"op": VoiceWS.CLIENT_DISCONNECT, "d": {"user_id": str(PLAYER_ID)}})

    assert bot.users_by_ssrc == {777: STRANGER_ID} and bot.users_in_call == {STRANGER_ID}
    datagram = seal_rtp(XCHACHA20_RTPSIZE, key, call[PLAYER_ID].encrypt_opus(opus_frame()))
    assert bot.feed(datagram, 0) == []  # held again, as from a stranger
    assert bot.counters.delivered == 0


async def test_the_socket_thread_hand_off_is_bounded_and_never_raises():
    listeners: list[Callable[[bytes], None]] = []
    connection = SimpleNamespace(
        mode=XCHACHA20_RTPSIZE, secret_key=list(os.urandom(32)), dave_session=None,
        dave_protocol_version=0, add_socket_listener=listeners.append,
        remove_socket_listener=listeners.remove,
    )
    receiver = VoiceReceiver(connection, asyncio.get_running_loop(), max_queued=3)
    receiver.start(lambda *packet: None)
    thread = threading.Thread(target=lambda: [listeners[0](b"\x00" * n) for n in range(5)])
    thread.start()
    thread.join()
    assert receiver.counters.overflow_dropped == 2

    await asyncio.sleep(0)  # the loop drains the three queued datagrams
    assert (receiver.counters.received, receiver.counters.ignored) == (3, 3)
    receiver.stop()
    assert listeners == []

    closed = asyncio.new_event_loop()
    closed.close()
    VoiceReceiver(connection, closed)._on_datagram(b"\x80\x78")  # no loop to wake: no raise
    await receiver.on_voice_ws_message(None, {"op": VoiceWS.SPEAKING, "d": {"ssrc": 1}})


class FakeVoiceSocket:
    """The aiohttp websocket under discord.py's DiscordVoiceWebSocket: records what it sends."""

    def __init__(self) -> None:
        self.binary: list[bytes] = []
        self.text: list[str] = []

    async def send_bytes(self, data: bytes) -> None:
        self.binary.append(bytes(data))

    async def send_str(self, data: str) -> None:
        self.text.append(data)


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)


async def test_receiving_voice_client_hears_a_player_over_udp(voice_clients):
    """discord.py's voice websocket joins the bot to the player's DAVE group and relays op 5
    to the hook; discord.py's reader thread reads real UDP; on_packet runs on the loop."""
    loop = asyncio.get_running_loop()
    gateway = LoopbackDaveGateway(CHANNEL_ID)
    player_session = gateway.session(PLAYER_ID)
    gateway.join(player_session)  # alone in the call: founds the group
    bot = voice_clients(ReceivingVoiceClient, BOT_ID, loop)
    state = bot._connection
    ws = VoiceWS(FakeVoiceSocket(), loop, hook=state.hook)
    ws._connection, state.ws, state.ssrc = state, ws, 1
    key = os.urandom(32)
    await ws.received_message({"op": VoiceWS.SESSION_DESCRIPTION, "d": {
        "mode": XCHACHA20_RTPSIZE, "secret_key": list(key), "dave_protocol_version": 1}})
    op26 = ws.ws.binary[-1]
    assert op26[0] == VoiceWS.MLS_KEY_PACKAGE
    await ws.received_binary_message(
        gateway.frame(VoiceWS.MLS_EXTERNAL_SENDER, gateway.external_sender_package))
    welcome = gateway.admit({BOT_ID: op26[1:]})
    await ws.received_binary_message(gateway.frame(VoiceWS.MLS_WELCOME, b"\x00\x03" + welcome))
    await ws.received_message({"op": VoiceWS.DAVE_EXECUTE_TRANSITION, "d": {"transition_id": 3}})
    assert state.dave_session.ready and player_session.ready

    state._create_socket()  # as on VOICE_SERVER_UPDATE: a UDP socket, the reader resumed
    inbound, outbound = state.socket, socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    heard: list[tuple[int, int, int, bytes, int, int]] = []
    bot.receiver.start(lambda *packet: heard.append((*packet, threading.get_ident())))
    try:
        inbound.bind(("127.0.0.1", 0))
        alice = player(voice_clients, player_session, XCHACHA20_RTPSIZE, key)
        outbound.connect(inbound.getsockname())
        alice._connection.socket = outbound
        frames = [opus_frame() for _ in range(3)]
        before = time.time_ns()
        for frame in frames[:2]:
            alice.send_audio_packet(frame, encode=False)
        await until(lambda: len(heard) == 2)  # no op 5 yet: her DAVE key tells who she is
        assert bot.receiver.counters.identified == 1

        await ws.received_message({"op": VoiceWS.SPEAKING, "d": {
            "user_id": str(PLAYER_ID), "ssrc": PLAYER_SSRC, "speaking": 1}})
        alice.send_audio_packet(frames[2], encode=False)
        await until(lambda: len(heard) == 3)
    finally:
        bot.receiver.stop()
        state._socket_reader.stop()
        outbound.send(b"wake")  # the reader waits in select() until a datagram comes
        state._socket_reader.join(timeout=2)
        inbound.close()
        outbound.close()

    assert [h[:4] for h in heard] == [(PLAYER_ID, i + 1, i * 960, f) for i, f in enumerate(frames)]
    assert all(before <= h[4] <= time.time_ns() for h in heard)
    assert {h[5] for h in heard} == {threading.get_ident()}
    assert (bot.receiver.counters.decrypted, bot.receiver.counters.delivered) == (3, 3)


async def test_a_new_voice_socket_is_read_at_once(voice_clients):
    """discord.py's reader waits up to 30 s in select() on the socket it has. When a
    reconnect replaces the socket while a listener is registered (ours always is), the new
    socket must be read at once: the new connection's IP discovery depends on it. The
    replaced reader must not take the new socket's datagrams for the old listeners."""
    loop = asyncio.get_running_loop()
    bot = voice_clients(ReceivingVoiceClient, BOT_ID, loop)
    state = bot._connection
    heard: list[bytes] = []
    state.add_socket_listener(heard.append)
    state._create_socket()
    first = state.socket
    first.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.sendto(b"before", first.getsockname())
        await until(lambda: heard == [b"before"])
        old_reader = state._socket_reader
        await asyncio.sleep(0.05)  # the reader waits in select() on the first socket again
        first.close()  # a voice reconnect: discord.py closes the socket, then makes a new one
        state._create_socket()
        second = state.socket
        second.bind(("127.0.0.1", 0))
        discovery: list[bytes] = []
        state.add_socket_listener(discovery.append)  # as discover_ip does, after the socket
        sent = [b"after-%d" % n for n in range(20)]
        for datagram in sent:
            sender.sendto(datagram, second.getsockname())
        await until(lambda: len(discovery) == len(sent), 1.0)
        assert discovery == sent and heard[1:] == sent
        assert state._socket_reader is not old_reader
    finally:
        state._socket_reader.stop()
        sender.sendto(b"wake", state.socket.getsockname())
        state._socket_reader.join(timeout=2)
        state.socket.close()
        sender.close()
