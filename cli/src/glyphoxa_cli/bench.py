"""``glyphoxa bench``: what the bus adds, and what the local providers cost.

1. Bus overhead: the whole stack as processes with instant fake providers. The bench plays
   the vad role's output directly (utterance start, 1 s of PCM, end) so the measurement
   starts at the moment an utterance is known to be over, and stops when the first opus
   frame of the reply is published on ``audio.out``. With instant providers, everything
   in between is bus, serialisation and service overhead.
2. Local providers: each stage's provider in-process on real inputs (see providers_bench).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from nats.aio.client import Client
from nats.aio.msg import Msg

from glyphoxa_bus.connection import BusSettings, connect, principal
from glyphoxa_bus.heartbeat import EDGE_ROLE, HeartbeatPublisher, heartbeating
from glyphoxa_bus.publisher import Publisher
from glyphoxa_cli.admin import AdminClient
from glyphoxa_cli.stack import Stack
from glyphoxa_events import headers as H
from glyphoxa_events.api import ApiReply, StartSession, StopSession
from glyphoxa_events.models import (
    AudioDone,
    TurnEnded,
    UtteranceEnded,
    UtteranceStarted,
    parse_control,
)
from glyphoxa_events.subjects import SessionSubjects, api_subject

HOPS: list[tuple[float, float, float]] = []
TENANT = "bench"
CAMPAIGN_YAML = "name: bench\nnpcs:\n  - name: Greta\n    persona: A gruff dwarven blacksmith.\n"
LIVE: set[str] = set()  # the sessions this edge plays, for its heartbeat


async def api_call(nc: Client, verb: str, body: StartSession | StopSession) -> ApiReply:
    """session-control's bus API, the door an edge uses."""
    msg = await nc.request(api_subject(verb, principal(nc)), body.model_dump_json().encode(), timeout=10)
    reply = ApiReply.model_validate_json(msg.data)
    if not reply.ok:
        raise RuntimeError(f"{verb}: {reply.error}")
    return reply


async def prepare_tenant(api_url: str, operator_key: str) -> None:
    async with AdminClient(api_url, operator_key) as operator:
        await operator.ensure_tenant(TENANT, "Benchmark", tier={
            "max_concurrent_sessions": 1000, "monthly_session_hours": 100000})
        async with operator.with_key(await operator.create_api_key(TENANT, "bench")) as client:
            await client.import_campaign(CAMPAIGN_YAML)


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p)) if values else float("nan")


async def _session_turns(nc: Client, name: str, turns: int) -> list[float]:
    tenant = TENANT
    reply = await api_call(nc, "session.start", StartSession(
        tenant=tenant, campaign="bench", session=f"{name}-{time.time_ns() % 10**9}", edge="sim"))
    session = reply.session.session  # type: ignore[union-attr]
    LIVE.add(f"{tenant}.{session}")
    subjects = SessionSubjects(tenant, session)
    first_audio: dict[str, int] = {}
    arrived: dict[str, asyncio.Event] = {}

    async def on_audio(msg: Msg) -> None:
        turn = (msg.headers or {}).get(H.TURN, "")
        if turn not in first_audio:
            first_audio[turn] = int((msg.headers or {})[H.PUBLISHED_NS])
            arrived.setdefault(turn, asyncio.Event()).set()

    hops: dict[str, TurnEnded] = {}
    spoken: dict[str, asyncio.Event] = {}

    async def on_turn(msg: Msg) -> None:
        event = parse_control(msg.data)
        if isinstance(event, TurnEnded):
            hops[event.turn_id] = event
        elif isinstance(event, AudioDone):
            spoken.setdefault(event.turn_id, asyncio.Event()).set()

    sub = await nc.subscribe(subjects.audio_out("*"), cb=on_audio)
    turn_sub = await nc.subscribe(subjects.ctl(">"), cb=on_turn)
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    publisher = Publisher(nc, 64)
    pcm = (np.random.default_rng(0).normal(0, 2000, 16000)).astype(np.int16).tobytes()
    latencies = []
    await asyncio.sleep(1.0)  # the stages claim the session (a table does not speak in its first ms)
    try:
        for i in range(turns):
            utt = f"alex-{i * 1000}"
            now = time.time_ns()
            key = f"vad:{tenant}.{session}:{utt}"
            await publisher.publish(subjects.vad("alex"), UtteranceStarted(
                utterance_id=utt, speaker="alex", start_ns=now - 1_000_000_000).to_bytes(),
                f"{key}:start", {H.KIND: "start", H.UTTERANCE: utt})
            for n in range(5):
                await publisher.publish(subjects.vad("alex"), pcm[n * 6400:(n + 1) * 6400], f"{key}:{n}",
                                        {H.KIND: "audio", H.UTTERANCE: utt, H.SEQ: str(n)})
            end_ns = time.time_ns()
            await publisher.publish(subjects.vad("alex"), UtteranceEnded(
                utterance_id=utt, speaker="alex", start_ns=now - 1_000_000_000, speech_end_ns=end_ns,
                chunks=5, audio_ms=1000, vad_end_ns=end_ns).to_bytes(), f"{key}:end",
                {H.KIND: "end", H.UTTERANCE: utt})
            event = arrived.setdefault(utt, asyncio.Event())
            await asyncio.wait_for(event.wait(), timeout=30)
            latencies.append((first_audio[utt] - end_ns) / 1e6)
            for _ in range(100):
                if utt in hops:
                    break
                await asyncio.sleep(0.01)
            lat = hops[utt].latency if utt in hops else None
            if lat is not None:
                HOPS.append(((lat.stt_final_ns - end_ns) / 1e6, (lat.first_sentence_ns - end_ns) / 1e6,
                             (first_audio[utt] - end_ns) / 1e6))
            # like a table: the next line comes after the NPC's audio is out, plus a pause
            await asyncio.wait_for(spoken.setdefault(utt, asyncio.Event()).wait(), timeout=30)
            await asyncio.sleep(float(rng.uniform(0.5, 1.5)))
    finally:
        await sub.unsubscribe()
        await turn_sub.unsubscribe()
        LIVE.discard(f"{tenant}.{session}")
        await api_call(nc, "session.stop", StopSession(tenant=tenant, session=session))
    return latencies


async def bus_overhead(nats_url: str, sessions: int, turns: int) -> list[float]:
    nc = await connect(BusSettings(url=nats_url), name="bench")
    # the bench is the edge and publishes what vad would: it heartbeats as both, or
    # session-control would end its sessions for want of them
    edge, vad = (HeartbeatPublisher(nc, role, f"bench-{os.getpid()}", lambda: sorted(LIVE),
                                    capacity=1000) for role in (EDGE_ROLE, "vad"))
    try:
        async with heartbeating(edge), heartbeating(vad):
            await _session_turns(nc, "warmup", 2)  # first session pays connection/consumer set-up
            results = await asyncio.gather(*(_session_turns(nc, f"bench{i}", turns)
                                             for i in range(sessions)))
    finally:
        await nc.close()
    return [x for r in results for x in r]


def run_bus_bench(session_counts: list[int], turns: int) -> list[dict]:
    home = Path(tempfile.mkdtemp(prefix="glyphoxa-bench-"))
    home.chmod(0o755)  # as root, PostgreSQL runs as `nobody` and must reach its data
    env = {"STT_PROVIDER": "fake", "BRAIN_LLM_PROVIDER": "fake", "TTS_PROVIDER": "fake",
           "LOG_LEVEL": "warning", **{f"{s}_CAPACITY": "32" for s in ("STT", "BRAIN", "TTS")}}
    stack = Stack(home, env=env, services=("session-control", "stt", "npc-brain", "tts"))
    rows = []
    try:
        stack.start(progress=lambda s: None)
        asyncio.run(prepare_tenant(stack.api_url, stack.keys()["operator_key"]))
        for n in session_counts:
            lat = asyncio.run(bus_overhead(stack.nats_url or "", n, turns))
            hops = np.asarray(HOPS) if HOPS else np.zeros((1, 3))
            HOPS.clear()
            rows.append({"hops_p50": [float(np.percentile(hops[:, i], 50)) for i in range(3)],
                         "sessions": n, "turns": len(lat), "p50_ms": percentile(lat, 50),
                         "p99_ms": percentile(lat, 99), "max_ms": max(lat), "mean_ms": statistics.mean(lat)})
    finally:
        stack.stop()
    return rows


def main(args: argparse.Namespace) -> int:
    print("== bus overhead: utterance end published -> first audio frame published "
          "(instant fake providers, every service a process)")
    rows = run_bus_bench(args.sessions, args.turns)
    print(f"{'sessions':>8} {'turns':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for r in rows:
        stt, sentence, audio = r["hops_p50"]
        print(f"{r['sessions']:>8} {r['turns']:>6} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f}"
              f"   (p50 cumulative: stt final {stt:.1f}, first sentence {sentence:.1f}, first audio {audio:.1f})")
    if not args.skip_providers:
        from glyphoxa_cli.providers_bench import run_provider_bench

        run_provider_bench()
    return 0
