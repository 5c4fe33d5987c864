#!/usr/bin/env python3
"""What the bus costs a stage per message and per idle session, on its own (issue 17).

    .venv/bin/python scripts/bench_bus_costs.py [--frames 3000] [--sessions 20] [--seconds 8]

Against a nats-server of its own (file storage, as the stacks run it), in this one process:

1. **A frame published**: ``--frames`` opus-sized frames (160 bytes) through the stages'
   ``Outbox``/``Publisher`` (``Nats-Msg-Id``, the ack awaited in the background), one message
   after another with an ``asyncio.sleep(0)`` between them as tts does: with the headers tts
   puts on every ``audio.out`` message, without any, and 10 frames a message
   (``glyphoxa_events.frames``, as tts sends all but a turn's first frame): CPU milliseconds
   per frame of this process (publish and ack together) and of the nats-server (storing it).
2. **A session waiting**: ``--sessions`` idle per-session input loops
   (``ContinuousPull.next_batch`` with the serve loop's tick as timeout, no messages), at the
   serve loop's 50 ms tick and at 250 ms: the cores a stage spends on sessions that say nothing.
3. **An opus frame encoded**: 20 ms of the fake voice's tone at 48 kHz stereo, 64 kbit/s (what
   tts encodes for Discord), CPU milliseconds per frame.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import numpy as np
import psutil
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from glyphoxa_bus.publisher import Outbox, Publisher
from glyphoxa_bus.pull import ContinuousPull
from glyphoxa_events import headers as H
from glyphoxa_events.frames import pack as pack_frames
from glyphoxa_tts.frames import FRAME_SAMPLES, FrameEncoder

NATS_SERVER = Path(sys.executable).parent / "nats-server"


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_cpu_s(pid: int) -> float:
    return sum(psutil.Process(pid).cpu_times()[:2])


async def publish_cost(nc: nats.NATS, server_pid: int, frames: int, with_headers: bool,
                       per_message: int = 1) -> tuple[float, float]:
    """CPU ms per frame: (this process, the nats-server)."""
    outbox = Outbox(Publisher(nc, 256))
    packet = b"\x00" * 160
    body, count = pack_frames([packet] * per_message)
    started, server_started = cpu_s(), server_cpu_s(server_pid)
    for seq in range(0, frames, per_message):
        headers = {H.TURN: "alex-1", H.SEQ: str(seq), H.PUBLISHED_NS: str(time.time_ns()),
                   H.SPEECH_END_NS: str(time.time_ns()), **count,
                   "traceparent": f"00-{'a' * 32}-{'b' * 16}-01"} if with_headers else None
        await outbox.publish("bench.audio.out.greta", body,
                             f"aout:bench:{with_headers}:{per_message}:{seq}", headers)
        await asyncio.sleep(0)
    await outbox.flush()
    return ((cpu_s() - started) / frames * 1000,
            (server_cpu_s(server_pid) - server_started) / frames * 1000)


async def idle_cost(nc: nats.NATS, sessions: int, tick_s: float, seconds: float) -> float:
    js = nc.jetstream()
    pulls = []
    for i in range(sessions):
        name = f"idle-{int(tick_s * 1000)}-{i}"
        await js.add_consumer("BENCH", ConsumerConfig(
            durable_name=name, ack_policy=AckPolicy.ALL, filter_subjects=[f"bench.idle.{i}.>"]))
        pulls.append(await ContinuousPull(nc, "BENCH", name).start())
    stop = time.monotonic() + seconds

    async def loop(pull: ContinuousPull) -> None:
        while time.monotonic() < stop:
            await pull.next_batch(timeout=tick_s)

    started = cpu_s()
    await asyncio.gather(*(loop(p) for p in pulls))
    used = (cpu_s() - started) / seconds
    for pull in pulls:
        await pull.stop()
    return used


def encode_cost(frames: int) -> float:
    encoder = FrameEncoder()
    t = np.arange(frames * FRAME_SAMPLES) / 48_000
    tone = (0.1 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    started = cpu_s()
    made = sum(1 for _ in encoder.push(tone))
    return (cpu_s() - started) / made * 1000


async def run(args: argparse.Namespace) -> None:
    port = free_port()
    store = Path(tempfile.mkdtemp(prefix="glyphoxa-bench-bus-"))
    server = subprocess.Popen([str(NATS_SERVER), "-js", "-sd", str(store), "-p", str(port),
                               "-a", "127.0.0.1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # until the server listens
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.05)
        else:
            raise SystemExit(f"nats-server ({NATS_SERVER}) did not start")
        nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
        await nc.jetstream().add_stream(StreamConfig(
            name="BENCH", subjects=["bench.>"], storage=StorageType.FILE))
        print(f"1. a frame published and acked (Outbox), CPU per frame, {args.frames} frames:"
              "  this process / nats-server")
        for label, with_headers, per_message in (("with tts headers", True, 1),
                                                 ("no headers", False, 1),
                                                 ("10 a message", True, 10)):
            ms, server_ms = await publish_cost(nc, server.pid, args.frames, with_headers,
                                               per_message)
            print(f"   {label:<18} {ms:.3f} ms / {server_ms:.3f} ms")
        print(f"2. {args.sessions} idle session input loops, {args.seconds:g} s each:")
        for tick_s in (0.05, 0.25):
            cores = await idle_cost(nc, args.sessions, tick_s, args.seconds)
            print(f"   tick {tick_s * 1000:>4.0f} ms         {cores:.3f} cores")
        print(f"3. an opus frame encoded (48 kHz stereo, 64 kbit/s): "
              f"{encode_cost(args.frames):.3f} ms CPU")
        await nc.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(store, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--seconds", type=float, default=8.0)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
