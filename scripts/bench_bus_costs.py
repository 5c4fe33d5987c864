#!/usr/bin/env python3
"""What the bus costs a stage per message and per idle session, on its own (issue 17).

    .venv/bin/python scripts/bench_bus_costs.py [--frames 3000] [--sessions 20] [--seconds 8] [--parts 1234]

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
4. **One hop**: ``--hops`` small messages, one every 10 ms, from this process through the
   broker into another process, published -> in the consumer's hands (wall clock, p50 / p90 /
   p99 ms), three ways: a file-stored JetStream stream through the stages' ``Publisher`` and
   ``ContinuousPull`` (what every hop of a turn is), the same on a memory-stored stream, and a
   core NATS subscription (no JetStream): what a message costs on its way between two stages
   when both are idle, and how much of it is JetStream's. And, for the floor under any broker,
   no broker at all: the same messages written straight into a loopback socket the other
   process reads with asyncio (one process waking another once, where a broker hop wakes the
   broker and then the consumer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from glyphoxa_bus.connection import BusSettings, connect
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


HOP_WAYS = {"jetstream, file": ("HOP_FILE", StorageType.FILE, "hop.file"),
            "jetstream, memory": ("HOP_MEMORY", StorageType.MEMORY, "hop.memory"),
            "core nats": (None, None, "hop.core"),
            "no broker, a socket": (None, None, None)}
SENT_NS = "Bench-Sent-Ns"


async def hop_consumer(url: str, way: str, count: int) -> None:
    """The other process of part 4: takes ``count`` messages the stages' way and prints the
    percentiles of published -> taken, as JSON, on stdout."""
    stream, _, subject = HOP_WAYS[way]
    if subject is None:
        return await _socket_consumer(count)
    nc = await connect(BusSettings(url=url), "bench-hop", declare=False, first_connect_s=10)
    took: list[float] = []
    done = asyncio.Event()

    def take(msg: Msg) -> None:
        took.append((time.time_ns() - int((msg.headers or {})[SENT_NS])) / 1e6)
        if len(took) >= count:
            done.set()

    if stream is None:
        async def on_msg(msg: Msg) -> None:
            take(msg)
        await nc.subscribe(subject, cb=on_msg)
        await nc.flush()
        print("ready", flush=True)
        await done.wait()
    else:
        await nc.jetstream().add_consumer(stream, ConsumerConfig(
            durable_name="hop", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=-1))
        pull = await ContinuousPull(nc, stream, "hop").start()
        print("ready", flush=True)
        while len(took) < count:
            for msg in await pull.next_batch(timeout=1.0):
                take(msg)
                await msg.ack()
    print(_percentiles(took), flush=True)
    await nc.close()


def _percentiles(took: list[float]) -> str:
    took = sorted(took)
    return json.dumps({str(q): took[min(len(took) - 1, int(q / 100 * len(took)))]
                       for q in (50, 90, 99)})


async def _socket_consumer(count: int) -> None:
    took: list[float] = []
    done = asyncio.Event()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while len(took) < count:
            data = await reader.readexactly(8 + 160)
            took.append((time.time_ns() - int.from_bytes(data[:8], "big")) / 1e6)
        writer.close()
        done.set()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    await done.wait()
    server.close()
    print(_percentiles(took), flush=True)


async def hop_latency(nc: nats.NATS, url: str, way: str, count: int) -> dict[str, float]:
    stream, storage, subject = HOP_WAYS[way]
    if stream is not None:
        await nc.jetstream().add_stream(StreamConfig(name=stream, subjects=[subject],
                                                     storage=storage))
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--hop-consumer", url, way, str(count),
        stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    ready = (await child.stdout.readline()).split()
    if not ready or ready[0] != b"ready":
        raise SystemExit(f"the hop consumer ({way}) did not start")
    writer = None
    if subject is None:
        _, writer = await asyncio.open_connection("127.0.0.1", int(ready[1]))
        writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                             socket.TCP_NODELAY, 1)
    publisher = Publisher(nc, 256)
    for n in range(count):
        sent = {SENT_NS: str(time.time_ns())}
        if writer is not None:
            writer.write(time.time_ns().to_bytes(8, "big") + b"\x00" * 160)
        elif stream is None:
            await nc.publish(subject, b"\x00" * 160, headers=sent)
        else:
            await publisher.publish(subject, b"\x00" * 160, f"hop:{n}", sent)
        await asyncio.sleep(0.01)
    result = json.loads(await asyncio.wait_for(child.stdout.readline(), 30))
    await child.wait()
    if writer is not None:
        writer.close()
    return result


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
        if "1" in args.parts:
            print(f"1. a frame published and acked (Outbox), CPU per frame, {args.frames} frames:"
                  "  this process / nats-server")
            for label, with_headers, per_message in (("with tts headers", True, 1),
                                                     ("no headers", False, 1),
                                                     ("10 a message", True, 10)):
                ms, server_ms = await publish_cost(nc, server.pid, args.frames, with_headers,
                                                   per_message)
                print(f"   {label:<18} {ms:.3f} ms / {server_ms:.3f} ms")
        if "2" in args.parts:
            print(f"2. {args.sessions} idle session input loops, {args.seconds:g} s each:")
            for tick_s in (0.05, 0.25):
                cores = await idle_cost(nc, args.sessions, tick_s, args.seconds)
                print(f"   tick {tick_s * 1000:>4.0f} ms         {cores:.3f} cores")
        if "3" in args.parts:
            print(f"3. an opus frame encoded (48 kHz stereo, 64 kbit/s): "
                  f"{encode_cost(args.frames):.3f} ms CPU")
        if "4" in args.parts:
            print(f"4. one hop into another process, {args.hops} messages, one every 10 ms "
                  "(published -> taken, ms):")
            for way in HOP_WAYS:
                q = await hop_latency(nc, f"nats://127.0.0.1:{port}", way, args.hops)
                print(f"   {way:<20} p50 {q['50']:.2f}  p90 {q['90']:.2f}  p99 {q['99']:.2f}")
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
    p.add_argument("--hops", type=int, default=400)
    p.add_argument("--parts", default="1234", help="which parts to run, e.g. 4 (default: all)")
    p.add_argument("--hop-consumer", nargs=3, metavar=("URL", "WAY", "COUNT"),
                   help=argparse.SUPPRESS)  # part 4's other process
    args = p.parse_args()
    if args.hop_consumer:
        url, way, count = args.hop_consumer
        asyncio.run(hop_consumer(url, way, int(count)))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
