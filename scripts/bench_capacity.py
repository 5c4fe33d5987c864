#!/usr/bin/env python3
"""How many sessions one replica of each stage carries: the number KEDA's lagThreshold is.

    .venv/bin/python scripts/bench_capacity.py [--sessions 1 2 4 8 16 24 32 48 64] [--seconds 55]
        [--vad-engine silero] [--out out/bench-capacity.json]

One nats-server and ONE replica of each stage (vad, stt, npc-brain, tts) as processes;
vad runs its real engine (Silero by default), stt, npc-brain and tts their instant fakes
(``STT_PROVIDER=fake``, ``BRAIN_LLM_PROVIDER=fake``, ``TTS_PROVIDER=fake``). The bench plays
session-control (``session.started``, one claim per stage, ``session.stopped``) and the edge:
each session gets the example scene's recorded audio (examples/scenes/smithy, 3 players),
each player's track as 20 ms opus frames, Discord style (frames while the player makes
sound, then 5 silence frames, then nothing), in real time; sessions start up to 2 s apart.
stt's fake hears every utterance as addressed to an NPC, so every utterance gets a reply
(more brain and tts work than a table makes). Steps of concurrent sessions are played one
after another on the same replicas.

A stage's added latency, from its input's publish to its output's publish:

- vad: JetStream's store time of an utterance's audio chunk (``vad.<speaker>``) minus the
  store time of the ``audio.in`` frame that completed it (the chunk's last sample is
  start_ns + its samples; the frame is the first one published at or after it), so the
  bench's own scheduling does not count. Chunks that went out with the utterance's opening
  (their frame was stored before the utterance start: held back by design until
  min_speech_ms of speech) and each utterance's last chunk (sent with the end decision) are
  not counted.
- stt: the final transcript's ``stt_final_ns`` minus the utterance end's ``vad_end_ns``.
- npc-brain: the turn's first reply chunk's ``published_ns`` minus the transcript's
  ``stt_final_ns``.
- tts: the turn's first ``audio.out`` frame's ``Glx-Published-Ns`` minus the first reply
  chunk's ``published_ns``.

Dropped: messages a stage rejected (``glyphoxa_<stage>_rejected_messages_total``) and, for
vad, frames published but not analysed (``glyphoxa_vad_frames_total``). A stage holds a
step when its p99 is at most ``--p99-ms`` (50) and it dropped nothing; its sessions per
replica is the largest step it held. CPU is the stage process's user+system time over the
step (100% = one core), memory its resident set at the step's end; per session they are
taken above the idle replica (measured before the first step). JetStream storage is the
growth of the streams' bytes over the step, per session-hour of audio played. The bench
itself runs on the same cores and reports how late it published frames.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glyphoxa_bus.claims import publish_claims  # noqa: E402
from glyphoxa_bus.connection import BusSettings, connect  # noqa: E402
from glyphoxa_bus.publisher import Publisher  # noqa: E402
from glyphoxa_bus.streams import CONTROL, EVENTS, MEDIA, ensure_streams  # noqa: E402
from glyphoxa_campaign import Campaign, Npc  # noqa: E402
from glyphoxa_cli.player import FRAME_NS, encode_track  # noqa: E402
from glyphoxa_cli.processes import NatsServer, ServiceProcess  # noqa: E402
from glyphoxa_cli.scenefile import load_scene  # noqa: E402
from glyphoxa_events import headers as H  # noqa: E402
from glyphoxa_events.models import (  # noqa: E402
    ReplyChunk,
    SessionStarted,
    SessionStopped,
    Transcript,
    UtteranceEnded,
    UtteranceStarted,
)
from glyphoxa_events.subjects import SessionSubjects  # noqa: E402
from tests.support.service import http_get, metric  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCENE = ROOT / "examples" / "scenes" / "smithy"
CAMPAIGN = Campaign(name="capacity", npcs=(Npc(name="Greta", persona="A gruff dwarven blacksmith."),))
"""One NPC with the default voice, so tts speaks with the provider under test (the example
campaign's voices name piper and espeak, which would run for real)."""
STAGES = ("vad", "stt", "npc-brain", "tts")
NS_PER_SAMPLE = 62_500  # 16 kHz, vad's output
TENANT = "capacity"
NATS_PID: list[int] = []
P99_LIMIT_MS: list[float] = [50.0]
LINE = "Greta, how much for the longsword?"


def stage_env(nats_url: str, vad_engine: str) -> dict[str, str]:
    return {
        "NATS_URL": nats_url, "LOG_LEVEL": "warning",
        "STT_PROVIDER": "fake", "STT_FAKE_TEXT": LINE,
        "BRAIN_LLM_PROVIDER": "fake", "BRAIN_SPECULATE": "false", "TTS_PROVIDER": "fake",
        "VAD_ENGINE": vad_engine,
        **{f"{s}_CAPACITY": "256" for s in ("VAD", "STT", "BRAIN", "TTS")},
    }


@dataclass
class Heard:
    """What one session's stages published, with the times the latencies need."""

    frames: dict[str, tuple[list[int], list[asyncio.Future]]] = field(
        default_factory=lambda: defaultdict(lambda: ([], [])))
    """speaker -> (capture_ns of each published frame, its publish's ack), in order"""
    starts: dict[str, tuple[int, int]] = field(default_factory=dict)  # utt -> (start_ns, stored)
    chunks: dict[str, list[tuple[int, int, int]]] = field(
        default_factory=lambda: defaultdict(list))  # utt -> (index, samples, stored ns)
    ends: dict[str, UtteranceEnded] = field(default_factory=dict)
    finals: dict[str, Transcript] = field(default_factory=dict)
    first_chunk: dict[str, ReplyChunk] = field(default_factory=dict)
    first_frame: dict[str, int] = field(default_factory=dict)  # turn -> Glx-Published-Ns
    late_ms: list[float] = field(default_factory=list)  # the bench's own publish lateness

    async def latencies(self, js) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
        out: dict[str, list[float]] = {s: [] for s in STAGES}
        out["vad"] = await self._vad_latencies(js)
        for utt, final in self.finals.items():
            if final.vad_end_ns:
                out["stt"].append((final.stt_final_ns - final.vad_end_ns) / 1e6)
            chunk = self.first_chunk.get(utt)
            if chunk is None:
                continue
            out["npc-brain"].append((chunk.published_ns - final.stt_final_ns) / 1e6)
            if utt in self.first_frame:
                out["tts"].append((self.first_frame[utt] - chunk.published_ns) / 1e6)
        return out

    async def _vad_latencies(self, js) -> list[float]:  # type: ignore[no-untyped-def]
        """Store time of each counted chunk minus the store time of its completing frame
        (both JetStream's clock, so neither the bench's nor vad's scheduling shifts them)."""
        out = []
        for utt, (start_ns, opened) in self.starts.items():
            speaker = utt.rsplit("-", 1)[0]
            captures, acks = self.frames[speaker]
            end = self.ends.get(utt)
            samples = 0
            for index, n, stored in sorted(self.chunks.get(utt, [])):
                samples += n
                if end is not None and index >= end.chunks - 1:
                    continue  # sent with the end decision
                last_sample = start_ns + samples * NS_PER_SAMPLE - 1
                i = bisect.bisect_left(captures, last_sample - FRAME_NS + 1)
                if i >= len(captures) or not acks[i].done() or acks[i].exception():
                    continue  # a frame never stored: not vad's latency
                frame = await js.get_msg(MEDIA, acks[i].result().seq)
                frame_ns = int(frame.time.timestamp() * 1e9)
                if frame_ns <= opened:
                    continue  # went out with the opening, held back by design
                out.append((stored - frame_ns) / 1e6)
        return out


def stored_ns(msg) -> int:  # type: ignore[no-untyped-def]
    """JetStream's store time of a message delivered by a consumer (its ack subject)."""
    return int(msg.metadata.timestamp.timestamp() * 1e9)


class Session:
    def __init__(self, nc, campaign, name: str, stages: list[str]):  # type: ignore[no-untyped-def]
        self.nc, self.js = nc, nc.jetstream()
        self.stages = stages
        self.campaign = campaign
        self.subjects = SessionSubjects(TENANT, name)
        self.heard = Heard()
        self._subs: list = []

    @property
    def ref(self) -> str:
        return f"{self.subjects.tenant}/{self.subjects.session}"

    async def begin(self) -> None:
        s, h = self.subjects, self.heard

        async def on_vad(msg) -> None:  # type: ignore[no-untyped-def]
            kind = (msg.headers or {}).get(H.KIND)
            utt = (msg.headers or {}).get(H.UTTERANCE, "")
            if kind == "start":
                h.starts[utt] = (UtteranceStarted.model_validate_json(msg.data).start_ns,
                                 stored_ns(msg))
            elif kind == "audio":
                h.chunks[utt].append((int(msg.headers[H.SEQ]), len(msg.data) // 2,
                                      stored_ns(msg)))
            elif kind == "end":
                h.ends[utt] = UtteranceEnded.model_validate_json(msg.data)

        async def on_stt(msg) -> None:  # type: ignore[no-untyped-def]
            t = Transcript.model_validate_json(msg.data)
            if t.final:
                h.finals[t.utterance_id] = t

        async def on_reply(msg) -> None:  # type: ignore[no-untyped-def]
            c = ReplyChunk.model_validate_json(msg.data)
            if c.index == 0:
                h.first_chunk[c.turn_id] = c

        async def on_audio(msg) -> None:  # type: ignore[no-untyped-def]
            turn = (msg.headers or {}).get(H.TURN, "")
            if turn not in h.first_frame:
                h.first_frame[turn] = int(msg.headers[H.PUBLISHED_NS])

        self._subs = [
            await self.js.subscribe(s.vad("*"), cb=on_vad, ordered_consumer=True),
            await self.nc.subscribe(s.stt("*"), cb=on_stt),
            await self.nc.subscribe(s.reply("*"), cb=on_reply),
            await self.nc.subscribe(s.audio_out("*"), cb=on_audio),
        ]
        started = SessionStarted(campaign=self.campaign, started_ns=time.time_ns())
        await self.js.publish(s.ctl("session.started"), started.to_bytes(), headers={
            H.MSG_ID: f"ctl:{s.tenant}.{s.session}:session.started:1"})
        await publish_claims(self.nc, s.tenant, s.session, self.stages)

    async def play(self, tracks, publisher: Publisher, offset_s: float) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(offset_s)
        s, h = self.subjects, self.heard
        schedule = sorted((i, o.speaker, pkt) for o in tracks for i, pkt in o.frames)
        t0 = time.time_ns()
        start = time.monotonic()
        for index, speaker, packet in schedule:
            delay = start + index * 0.020 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.001:
                h.late_ms.append(-delay * 1000)
            capture_ns = t0 + index * FRAME_NS
            seq = capture_ns // FRAME_NS
            captures, acks = h.frames[speaker]
            captures.append(capture_ns)
            acks.append(await publisher.publish(
                s.audio_in(speaker), packet, f"ain:{s.tenant}.{s.session}:{speaker}:{seq}",
                {H.SEQ: str(seq), H.CAPTURE_NS: str(capture_ns), H.CODEC: H.CODEC_OPUS}))

    async def end(self) -> None:
        s = self.subjects
        stopped = SessionStopped(reason="bench step over", stopped_ns=time.time_ns())
        await self.js.publish(s.ctl("session.stopped"), stopped.to_bytes(), headers={
            H.MSG_ID: f"ctl:{s.tenant}.{s.session}:session.stopped:1"})
        for sub in self._subs:
            await sub.unsubscribe()


def cpu_pressure_us() -> int | None:
    """The machine's ``some`` CPU pressure so far (µs any task waited for a core), Linux PSI."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return int(line.rsplit("total=", 1)[1])


def percentile(values: list[float], p: float) -> float | None:
    return round(float(np.percentile(values, p)), 2) if values else None


def held_by(replica: ServiceProcess) -> set[str]:
    try:
        return set(json.loads(http_get(replica.metrics_port, "/readyz")).get("sessions", []))
    except OSError:
        return set()


async def wait_until(predicate, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return False


class Usage:
    """CPU seconds and resident memory of the stage processes, and the streams' bytes."""

    def __init__(self, replicas: dict[str, ServiceProcess], others: dict[str, int] | None = None):
        self.procs = {s: psutil.Process(r.proc.pid) for s, r in replicas.items()}  # type: ignore[union-attr]
        self.procs.update({name: psutil.Process(pid) for name, pid in (others or {}).items()})

    def cpu_s(self) -> dict[str, float]:
        out = {}
        for stage, p in self.procs.items():
            t = p.cpu_times()
            out[stage] = t.user + t.system
        return out

    def rss_mb(self) -> dict[str, float]:
        return {s: p.memory_info().rss / 2**20 for s, p in self.procs.items()}


async def stream_bytes(js) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {name: (await js.stream_info(name)).state.bytes for name in (MEDIA, EVENTS, CONTROL)}


def rejected(replicas: dict[str, ServiceProcess]) -> dict[str, float]:
    return {s: metric(r.metrics_port, f"glyphoxa_{s.replace('-', '_')}_rejected_messages_total")
            for s, r in replicas.items()}


async def run_step(nc, replicas: dict[str, ServiceProcess], n: int, step: int, tracks,  # type: ignore[no-untyped-def]
                   campaign, seconds: float) -> dict:
    js = nc.jetstream()
    sessions = [Session(nc, campaign, f"n{n}-s{i}-{step}", list(replicas)) for i in range(n)]
    for session in sessions:
        await session.begin()
    refs = {s.ref for s in sessions}
    if not await wait_until(lambda: all(refs <= held_by(r) for r in replicas.values()), 60):
        raise RuntimeError("the stages did not claim every session within 60 s")
    usage = Usage(replicas, {"nats-server": NATS_PID[0], "bench": os.getpid()})
    cpu0, bytes0, rej0 = usage.cpu_s(), await stream_bytes(js), rejected(replicas)
    frames0 = metric(replicas["vad"].metrics_port, "glyphoxa_vad_frames_total")
    pressure0 = cpu_pressure_us()
    publisher = Publisher(nc, max_in_flight=1024)
    rng = random.Random(step)
    t_start = time.monotonic()
    await asyncio.gather(*(s.play(tracks, publisher, rng.uniform(0, 2.0)) for s in sessions))
    await asyncio.sleep(3.0)  # the last utterance ends (min silence) and its reply is spoken
    elapsed = time.monotonic() - t_start
    cpu1, rss = usage.cpu_s(), usage.rss_mb()
    pressure1 = cpu_pressure_us()
    frames = metric(replicas["vad"].metrics_port, "glyphoxa_vad_frames_total") - frames0
    bytes1, rej1 = await stream_bytes(js), rejected(replicas)
    for session in sessions:
        await session.end()
    await wait_until(lambda: not any(refs & held_by(r) for r in replicas.values()), 30)

    published = sum(len(s.heard.frames[sp][0]) for s in sessions for sp in s.heard.frames)
    lat: dict[str, list[float]] = defaultdict(list)
    for session in sessions:
        for stage, values in (await session.heard.latencies(js)).items():
            lat[stage] += values
    late = [x for s in sessions for x in s.heard.late_ms]
    audio_h = n * seconds / 3600
    row: dict = {"sessions": n, "elapsed_s": round(elapsed, 1), "frames_published": published,
                 "cpu_percent": {k: round(100 * (cpu1[k] - cpu0[k]) / elapsed, 1)
                                 for k in ("nats-server", "bench")},
                 "machine_cpu_pressure_percent": None if pressure0 is None else round(
                     (pressure1 - pressure0) / 1e4 / elapsed, 1),  # type: ignore[operator]
                 "load_average_1m": os.getloadavg()[0],
                 "bench_late_frames": len(late), "bench_late_max_ms": round(max(late, default=0), 1),
                 "jetstream_bytes": {k: bytes1[k] - bytes0[k] for k in bytes1},
                 "jetstream_mb_per_session_hour": round(
                     sum(bytes1[k] - bytes0[k] for k in bytes1) / 2**20 / audio_h, 1),
                 "stages": {}}
    for stage in replicas:
        dropped = rej1[stage] - rej0[stage]
        if stage == "vad":
            dropped += max(0, published - frames)
        row["stages"][stage] = {
            "measured": len(lat[stage]), "p50_ms": percentile(lat[stage], 50),
            "p95_ms": percentile(lat[stage], 95), "p99_ms": percentile(lat[stage], 99),
            "over_p99_limit": sum(1 for x in lat[stage] if x > P99_LIMIT_MS[0]),
            "max_ms": round(max(lat[stage]), 2) if lat[stage] else None,
            "dropped": int(dropped),
            "cpu_percent": round(100 * (cpu1[stage] - cpu0[stage]) / elapsed, 1),
            "rss_mb": round(rss[stage], 1)}
    return row


def holds_step(stage: dict, p99_ms: float) -> bool:
    return stage["measured"] > 0 and stage["p99_ms"] <= p99_ms and stage["dropped"] == 0


def summary(rows: list[dict], idle: dict, p99_ms: float) -> dict:
    """Per stage: the largest step it held, and its CPU and memory per session there."""
    out = {}
    for stage in rows[0]["stages"] if rows else []:
        held = [r for r in rows if holds_step(r["stages"][stage], p99_ms)]
        # the first step it failed ends the climb for that stage
        failed = next((r["sessions"] for r in rows if not holds_step(r["stages"][stage], p99_ms)),
                      None)
        held = [r for r in held if failed is None or r["sessions"] < failed]
        best = held[-1] if held else None
        entry: dict = {"sessions_per_replica": best["sessions"] if best else 0,
                       "first_failed_step": failed,
                       "idle_cpu_percent": idle["cpu_percent"][stage],
                       "idle_rss_mb": idle["rss_mb"][stage]}
        if best:
            s = best["stages"][stage]
            n = best["sessions"]
            entry["cpu_percent_per_session"] = round(
                (s["cpu_percent"] - idle["cpu_percent"][stage]) / n, 2)
            entry["rss_mb_per_session"] = round((s["rss_mb"] - idle["rss_mb"][stage]) / n, 2)
            entry["rss_mb_at_capacity"] = s["rss_mb"]
        out[stage] = entry
    return out


def print_table(rows: list[dict], result: dict) -> None:
    print(f"\n{'sessions':>8} {'stage':>10} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
          f" {'dropped':>7} {'cpu %':>6} {'rss MB':>7}")
    for r in rows:
        for stage, s in r["stages"].items():
            print(f"{r['sessions']:>8} {stage:>10} {s['measured']:>6} {s['p50_ms']!s:>8} "
                  f"{s['p99_ms']!s:>8} {s['max_ms']!s:>8} {s['dropped']:>7} "
                  f"{s['cpu_percent']:>6} {s['rss_mb']:>7}")
        print(f"{'':>8} machine: CPU pressure {r['machine_cpu_pressure_percent']}% "
              f"(time some task waited for a core), load {r['load_average_1m']:.2f}")
        print(f"{'':>8} JetStream {r['jetstream_mb_per_session_hour']} MB per session-hour; "
              f"cpu % nats-server {r['cpu_percent']['nats-server']}, bench {r['cpu_percent']['bench']}; "
              f"bench late frames {r['bench_late_frames']} (max {r['bench_late_max_ms']} ms)")
    print(f"\n{'stage':>10} {'sessions/replica':>16} {'cpu %/session':>13} {'MB/session':>10}"
          f" {'idle MB':>8} {'failed at':>9}")
    for stage, e in result["per_stage"].items():
        print(f"{stage:>10} {e['sessions_per_replica']:>16} "
              f"{e.get('cpu_percent_per_session', '-')!s:>13} {e.get('rss_mb_per_session', '-')!s:>10}"
              f" {e['idle_rss_mb']:>8} {e['first_failed_step']!s:>9}")


async def bench(nats_url: str, replicas: dict[str, ServiceProcess], args) -> dict:  # type: ignore[no-untyped-def]
    scene = load_scene(SCENE)
    tracks = [encode_track(s, pcm[: int(args.seconds * scene.sample_rate)])
              for s, pcm in scene.tracks.items()]
    campaign = CAMPAIGN
    nc = await connect(BusSettings(url=nats_url), name="bench-capacity")
    rows: list[dict] = []
    try:
        await ensure_streams(nc.jetstream())
        usage = Usage(replicas)
        cpu0 = usage.cpu_s()
        await asyncio.sleep(5.0)
        idle = {"cpu_percent": {s: round(100 * (c - cpu0[s]) / 5.0, 1)
                                for s, c in usage.cpu_s().items()},
                "rss_mb": {s: round(m, 1) for s, m in usage.rss_mb().items()}}
        await run_step(nc, replicas, 1, 0, tracks, campaign, min(args.seconds, 10))  # warm-up
        failed: set[str] = set()
        for step, n in enumerate(args.sessions, start=1):
            print(f"== {n} concurrent sessions ...", flush=True)
            row = await run_step(nc, replicas, n, step, tracks, campaign, args.seconds)
            rows.append(row)
            for stage, s in row["stages"].items():
                print(f"   {stage:>10}: p99 {s['p99_ms']} ms over {s['measured']} "
                      f"({s['over_p99_limit']} over {args.p99_ms:.0f} ms), dropped "
                      f"{s['dropped']}, cpu {s['cpu_percent']}%, rss {s['rss_mb']} MB", flush=True)
                if not holds_step(s, args.p99_ms):
                    failed.add(stage)
            print(f"   machine: CPU pressure {row['machine_cpu_pressure_percent']}%, load "
                  f"{row['load_average_1m']:.2f}", flush=True)
            if failed >= set(args.stop_when or args.stages):
                break
    finally:
        await nc.close()
    return {"idle": idle, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8, 16, 24, 32, 48, 64])
    parser.add_argument("--seconds", type=float, default=55.0,
                        help="scene seconds each session plays per step (the scene is 55 s)")
    parser.add_argument("--p99-ms", type=float, default=50.0)
    parser.add_argument("--vad-engine", default="silero", choices=["silero", "webrtc"])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="the stages to run (vad alone: no claims for the others)")
    parser.add_argument("--stop-when", nargs="*", choices=STAGES,
                        help="stop stepping once these stages failed (default: all four)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench-capacity.json")
    args = parser.parse_args()
    P99_LIMIT_MS[0] = args.p99_ms
    if "vad" not in args.stages:
        parser.error("vad turns the audio into utterances: it must run")

    home = Path(tempfile.mkdtemp(prefix="glyphoxa-capacity-"))
    nats = NatsServer(home / "nats").start()
    NATS_PID.append(nats.proc.pid)  # type: ignore[union-attr]
    env = stage_env(nats.url, args.vad_engine)
    replicas = {s: ServiceProcess(s, env=env, log_path=home / f"{s}.log", name=s)
                for s in args.stages}
    try:
        for r in replicas.values():
            r.start()
        for r in replicas.values():
            r.wait_ready()
        measured = asyncio.run(bench(nats.url, replicas, args))
    finally:
        for r in replicas.values():
            r.stop()
        nats.stop()
    result = {
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "settings": {"seconds": args.seconds, "p99_ms": args.p99_ms, "vad_engine": args.vad_engine,
                     "stages": args.stages,
                     "sessions": args.sessions, "scene": str(SCENE.relative_to(ROOT))},
        **measured,
        "per_stage": summary(measured["rows"], measured["idle"], args.p99_ms),
    }
    print_table(measured["rows"], result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\nresults: {args.out}  (logs: {home})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
