#!/usr/bin/env python3
"""What one discord-edge process can carry: the receive path's cost per packet, and
playback's pacing with many sessions playing at once.

    .venv/bin/python scripts/bench_edge.py [--players 1 5 25] [--sessions 1 10 50]

1. **Receive.** Each player's real opus frames (a tone, 20 ms each) are sealed as Discord
   relays them: DAVE by the player's davey session in a real DAVE group with the bot
   (``LoopbackDaveGateway``), then RTP with ``aead_xchacha20_poly1305_rtpsize``. The bench
   times the edge's ``VoicePacketProcessor.feed`` over them in one thread: parsing,
   transport decryption, DAVE decryption. A speaking player sends 50 packets a second, so
   ``packets/s / 50`` is how many players talking at once one core's receive path keeps up
   with (publishing to NATS comes on top; part 1 of docs/benchmarks.md has the bus).
2. **Playback.** ``--sessions`` ``Playback`` instances in one event loop, as one edge runs
   them, each given a 10 s NPC turn in one burst (as tts publishes faster than real time).
   Each frame's send time is compared with its deadline (the turn's first frame + n x 20 ms):
   how late frames go out, and how many are more than 20 ms late (a whole frame behind,
   which a listener can hear as a stutter).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import nacl.secret
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glyphoxa_audio.opus import OpusEncoder  # noqa: E402
from glyphoxa_discord_edge.loopback import (  # noqa: E402
    LoopbackConnection,
    LoopbackDaveGateway,
    seal_rtp,
)
from glyphoxa_discord_edge.playback import Playback  # noqa: E402
from glyphoxa_discord_edge.voice_receive import VoicePacketProcessor  # noqa: E402
from glyphoxa_events.models import AudioDone, Event, Outcome, TurnEnded  # noqa: E402

BOT, CHANNEL = 900_000_000_000_000_001, 900_000_000_000_000_002
FRAME_NS = 20_000_000
SILENCE = b"\xf8\xff\xfe"


def tone_frames(n: int) -> list[bytes]:
    encoder = OpusEncoder()
    t = np.arange(960 * n) / 48_000
    wave = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)
    return [encoder.encode(np.repeat(wave[i * 960:(i + 1) * 960, None], 2, axis=1))
            for i in range(n)]


def bench_receive(players: int, packets: int) -> dict[str, float]:
    gateway = LoopbackDaveGateway(CHANNEL)
    ids = [BOT + 1 + n for n in range(players)]
    sessions = gateway.create_group(BOT, *ids)
    key = os.urandom(32)
    box = nacl.secret.Aead(key)
    processor = VoicePacketProcessor(LoopbackConnection(list(key), sessions[BOT]))
    for n, user in enumerate(ids):
        processor.speaker(user, 1000 + n)
    frames = tone_frames(50)
    datagrams = []
    for i in range(packets):
        n = i % players
        payload = sessions[ids[n]].encrypt_opus(frames[i % len(frames)])
        datagrams.append(seal_rtp(box, 1000 + n, (i // players) & 0xFFFF,
                                  (i // players) * 960 & 0xFFFFFFFF, i, payload))
    start = time.perf_counter()
    delivered = sum(len(processor.feed(d, 0)) for d in datagrams)
    elapsed = time.perf_counter() - start
    assert delivered == packets and processor.counters.decrypted == packets, processor.counters
    per_packet_us = elapsed / packets * 1e6
    return {"players": players, "packets": packets, "us_per_packet": per_packet_us,
            "packets_per_s": packets / elapsed, "speakers_per_core": packets / elapsed / 50}


class _Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.audio = 0

    def send(self, opus: bytes) -> None:
        self.sent.append((time.monotonic_ns(), opus))
        self.audio += opus != SILENCE


async def bench_playback(sessions: int, seconds: float) -> dict[str, float]:
    frames = tone_frames(int(seconds * 50))
    sinks, playbacks = [], []
    for _ in range(sessions):
        sink = _Sink()
        events: list[Event] = []
        playbacks.append(Playback(sink, events.append))
        sinks.append(sink)
    runners = [asyncio.create_task(p.run()) for p in playbacks]
    for n, playback in enumerate(playbacks):  # every session's whole turn at once
        turn = f"turn-{n}"
        playback.on_control(TurnEnded(turn_id=turn, speaker="p", transcript="?", npc="greta",
                                      outcome=Outcome.answered, reply_text="..."))
        for seq, frame in enumerate(frames):
            playback.feed_frame("greta", turn, seq, frame)
        playback.on_control(AudioDone(turn_id=turn, npc="greta", frames=len(frames)))
    deadline = time.monotonic() + seconds + 5
    while (any(s.audio < len(frames) for s in sinks) and time.monotonic() < deadline):
        await asyncio.sleep(0.1)
    for playback in playbacks:
        await playback.close()
    for runner in runners:
        runner.cancel()
    await asyncio.gather(*runners, return_exceptions=True)
    late_ms: list[float] = []
    for sink in sinks:
        audio = [t for t, opus in sink.sent if opus != SILENCE]
        assert len(audio) == len(frames), f"{len(audio)} of {len(frames)} frames played"
        late_ms += [(t - audio[0] - i * FRAME_NS) / 1e6 for i, t in enumerate(audio)]
    ordered = sorted(late_ms)
    return {"sessions": sessions, "frames": len(late_ms),
            "p50_ms": statistics.median(ordered), "p99_ms": ordered[int(len(ordered) * 0.99)],
            "max_ms": ordered[-1], "over_20ms": sum(1 for x in late_ms if x > 20)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int, nargs="*", default=[1, 5, 25])
    parser.add_argument("--packets", type=int, default=5000)
    parser.add_argument("--sessions", type=int, nargs="*", default=[1, 10, 50])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"== discord-edge ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()})")
    print("-- receive path: RTP + xchacha20 + DAVE decryption, one thread")
    print(f"{'players':>8} {'packets':>8} {'us/packet':>10} {'packets/s':>10} {'speakers/core':>14}")
    bench_receive(2, 1000)  # warm-up: first calls into davey and libsodium cost more
    for players in args.players:
        r = bench_receive(players, args.packets)
        print(f"{r['players']:>8} {r['packets']:>8} {r['us_per_packet']:>10.1f} "
              f"{r['packets_per_s']:>10.0f} {r['speakers_per_core']:>14.0f}")
    print(f"-- playback: a {args.seconds:g} s turn per session, sent in one burst; "
          "lateness of each frame against its 20 ms deadline")
    print(f"{'sessions':>8} {'frames':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'>20 ms late':>12}")
    for sessions in args.sessions:
        r = asyncio.run(bench_playback(sessions, args.seconds))
        print(f"{r['sessions']:>8} {r['frames']:>8} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['max_ms']:>8.2f} {r['over_20ms']:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
