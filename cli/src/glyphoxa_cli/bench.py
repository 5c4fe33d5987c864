"""``glyphoxa bench``: what the bus adds, and what the local providers cost.

1. Bus overhead: the whole stack as processes with instant fake providers. The bench plays
   the vad role's output directly (utterance start, 1 s of PCM, end) so the measurement
   starts at the moment an utterance is known to be over, and stops when the first opus
   frame of the reply is published on ``audio.out``. With instant providers, everything
   in between is bus, serialisation and service overhead.
2. Recall's cost on the turn path (issue 16): the same bus bench twice, with
   ``BRAIN_RECALL=false`` and with it on, session-control embedding each turn's line with the
   local MiniLM model and searching the campaign's memories, which the bench fills first
   (``--memories`` exchanges the NPC witnessed, embedded with the same model). The fake stt
   hears realistic player lines (a script), as recall's embedding grows with the line.
3. Local providers: each stage's provider in-process on real inputs (see providers_bench).

Part 1 has a peer (issue 17): the same turns through Pipecat, one in-process pipeline per
session, all sessions in one process (``peer_bench``, run in ``.venv-peer`` as a subprocess so
its CPU and event loop are its own), printed beside ours in one table (``--skip-peer``: not).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client.samples import Sample

from glyphoxa_bus.connection import BusSettings, connect, principal
from glyphoxa_bus.heartbeat import EDGE_ROLE, HeartbeatPublisher, heartbeating
from glyphoxa_bus.publisher import Publisher
from glyphoxa_cli.admin import AdminClient
from glyphoxa_cli.peer_bench import process_cpu_s
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
FRAME_S = 0.02  # one opus frame of audio.out
SPEECH_CHUNKS = 5  # a bench line: 1 s of speech in vad's 200 ms chunks
SPEECH_CHUNK_S = 0.2
END_SILENCE_S = 0.2  # the shortest silence vad ends a turn on (Smart Turn's; fixed: 0.5 s)
BUS_ONLY = {"BRAIN_RECALL": "false", "MEMORY_EMBEDDER": "off"}
"""Part 1 measures the bus: no memory recall on the turn path and no embedding of exchanges
in session-control (a real model on the same cores; part 8b measures recall on its own)."""
PACINGS = {"table": 1.0, "out": 0.0}
"""How a bench session waits for the NPC before its next line: ``table``, until the reply has
been heard (its audio from the first frame on, in real time, as the edge plays it); ``out``,
only until tts has published the last frame (issue 2's pacing until 2026-12-04: the fake
voices are instant, so that is a line every ~1 s a session, ~4x a table's load)."""
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


async def _session_turns(nc: Client, name: str, turns: int, pace: float = 1.0) -> list[float]:
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
    played_s: dict[str, float] = {}  # how long each reply sounds at the table

    async def on_turn(msg: Msg) -> None:
        event = parse_control(msg.data)
        if isinstance(event, TurnEnded):
            hops[event.turn_id] = event
        elif isinstance(event, AudioDone):
            played_s[event.turn_id] = event.frames * FRAME_S
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
            key = f"vad:{tenant}.{session}:{utt}"
            # table pacing: the player speaks for the utterance's second (vad sends each 200 ms
            # chunk once it is heard) and vad ends it after its shortest silence; pacing out:
            # the whole utterance at once, its end right behind its audio
            start_ns = time.time_ns() - (0 if pace else 1_000_000_000)
            await publisher.publish(subjects.vad("alex"), UtteranceStarted(
                utterance_id=utt, speaker="alex", start_ns=start_ns).to_bytes(),
                f"{key}:start", {H.KIND: "start", H.UTTERANCE: utt})
            for n in range(SPEECH_CHUNKS):
                if pace:
                    await asyncio.sleep(SPEECH_CHUNK_S)
                await publisher.publish(subjects.vad("alex"), pcm[n * 6400:(n + 1) * 6400], f"{key}:{n}",
                                        {H.KIND: "audio", H.UTTERANCE: utt, H.SEQ: str(n)})
            speech_end_ns = time.time_ns()
            if pace:
                await asyncio.sleep(END_SILENCE_S)
            end_ns = time.time_ns()
            await publisher.publish(subjects.vad("alex"), UtteranceEnded(
                utterance_id=utt, speaker="alex", start_ns=start_ns, speech_end_ns=speech_end_ns,
                chunks=SPEECH_CHUNKS, audio_ms=1000, vad_end_ns=end_ns).to_bytes(), f"{key}:end",
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
            # like a table: the next line comes after the NPC has been heard to the end (its
            # audio plays in real time from its first frame, as the edge plays it), plus a pause
            await asyncio.wait_for(spoken.setdefault(utt, asyncio.Event()).wait(), timeout=30)
            heard_at = first_audio[utt] / 1e9 + played_s.get(utt, 0.0) * pace
            await asyncio.sleep(max(0.0, heard_at - time.time()) + float(rng.uniform(0.5, 1.5)))
    finally:
        await sub.unsubscribe()
        await turn_sub.unsubscribe()
        LIVE.discard(f"{tenant}.{session}")
        await api_call(nc, "session.stop", StopSession(tenant=tenant, session=session))
    return latencies


async def bus_overhead(nats_url: str, sessions: int, turns: int, pace: float = 1.0) -> list[float]:
    nc = await connect(BusSettings(url=nats_url), name="bench")
    # the bench is the edge and publishes what vad would: it heartbeats as both, or
    # session-control would end its sessions for want of them
    edge, vad = (HeartbeatPublisher(nc, role, f"bench-{os.getpid()}", lambda: sorted(LIVE),
                                    capacity=1000) for role in (EDGE_ROLE, "vad"))
    try:
        async with heartbeating(edge), heartbeating(vad):
            await _session_turns(nc, "warmup", 2)  # first session pays connection/consumer set-up
            results = await asyncio.gather(*(_session_turns(nc, f"bench{i}", turns, pace)
                                             for i in range(sessions)))
    finally:
        await nc.close()
    return [x for r in results for x in r]


def stack_cpu_s(stack: Stack) -> dict[str, float]:
    """CPU seconds (user + system) each of the stack's processes has used so far: nats-server,
    PostgreSQL with its backends, each service (not the bench, which plays the edge and vad)."""
    import psutil

    def used(pid: int | None, children: bool = False) -> float:
        if pid is None:
            return 0.0
        try:
            procs = [psutil.Process(pid)]
            if children:
                procs += procs[0].children(recursive=True)
            return sum(sum(p.cpu_times()[:2]) for p in procs)
        except psutil.Error:
            return 0.0

    out = {p.name: used(p.proc.pid if p.proc else None) for p in stack.procs}
    out["nats-server"] = used(stack.nats.proc.pid if stack.nats and stack.nats.proc else None)
    out["postgres"] = used(stack.postgres.proc.pid if stack.postgres and stack.postgres.proc else None,
                           children=True)
    return out


def run_bus_bench(session_counts: list[int], turns: int, env: dict[str, str] | None = None,
                  memories: int = 0, recall: dict | None = None, pace: float = 1.0) -> list[dict]:
    """Part 1 on a fresh stack; ``env`` on top of the fakes' settings, ``memories`` exchanges
    put in the bench campaign's memory before the sessions start; ``recall`` (a dict) gets
    npc-brain's recall metrics after the runs."""
    home = Path(tempfile.mkdtemp(prefix="glyphoxa-bench-"))
    home.chmod(0o755)  # as root, PostgreSQL runs as `nobody` and must reach its data
    env = {"STT_PROVIDER": "fake", "BRAIN_LLM_PROVIDER": "fake", "TTS_PROVIDER": "fake",
           "LOG_LEVEL": "warning",  # one replica of each stage carries every bench session
           **{f"{s}_CAPACITY": str(max(32, *session_counts)) for s in ("STT", "BRAIN", "TTS")},
           **(env or {})}
    stack = Stack(home, env=env, services=("session-control", "stt", "npc-brain", "tts"))
    rows = []
    try:
        stack.start(progress=lambda s: None)
        asyncio.run(prepare_tenant(stack.api_url, stack.keys()["operator_key"]))
        if memories:
            fill_memories(stack.pg_dsn or "", memories)
        for n in session_counts:
            cpu_before, wall, bench_before = stack_cpu_s(stack), time.monotonic(), process_cpu_s()
            gc_before = gc_pauses(stack)
            lat = asyncio.run(bus_overhead(stack.nats_url or "", n, turns, pace))
            gc_after = gc_pauses(stack)
            wall = time.monotonic() - wall
            bench_cpu = process_cpu_s() - bench_before
            cpu = {k: v - cpu_before.get(k, 0.0) for k, v in stack_cpu_s(stack).items()}
            hops = np.asarray(HOPS) if HOPS else np.zeros((1, 3))
            HOPS.clear()
            rows.append({"hops_p50": [float(np.percentile(hops[:, i], 50)) for i in range(3)],
                         "hops_p99": [float(np.percentile(hops[:, i], 99)) for i in range(3)],
                         "sessions": n, "turns": len(lat), "p50_ms": percentile(lat, 50),
                         "p95_ms": percentile(lat, 95),
                         "p99_ms": percentile(lat, 99), "max_ms": max(lat), "mean_ms": statistics.mean(lat),
                         # the stack's CPU over the run (its warm-up session included) per core-second
                         "cpu_share": sum(cpu.values()) / wall, "wall_s": wall,
                         # the bench process: every session's edge and vad (not the stack's work)
                         "bench_cpu_share": bench_cpu / wall,
                         "cpu_by_process": {k: round(v / wall, 3) for k, v in sorted(cpu.items())},
                         # (collections, of them >= 5 ms, seconds paused) per stage over the run
                         "gc": {k: tuple(a - b for a, b in zip(gc_after[k], gc_before[k]))
                                for k in GC_STAGES}})
        if recall is not None:
            recall.update(recall_metrics(stack.by_name("npc-brain-1").metrics_port))
            recall["phases"] = recall_phases(stack.by_name("session-control-1").metrics_port)
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)  # its streams and database: GBs over a few runs
    return rows


# --- 1, its peer: the same turns through Pipecat ---------------------------------------------

PEER_VENV = ".venv-peer"


def peer_python() -> Path:
    """The interpreter of the venv Pipecat is installed in (``./task peer-venv``): beside this
    one's (``<repo>/.venv`` -> ``<repo>/.venv-peer``), or ``GLYPHOXA_PEER_PYTHON``."""
    if os.environ.get("GLYPHOXA_PEER_PYTHON"):
        return Path(os.environ["GLYPHOXA_PEER_PYTHON"])
    return Path(sys.prefix).parent / PEER_VENV / "bin" / "python"


def run_peer_bench(session_counts: list[int], turns: int, pace: float = 1.0,
                   frames_dir: Path | None = None) -> dict:
    """``peer_bench`` in its own process: ``{"pipecat": version, "rows": [...]}``, a row per
    session count like ours (p50/p99/max ms, cpu_share in cores, hops_p50)."""
    python = peer_python()
    if not python.exists():
        raise SystemExit(f"glyphoxa bench: no Pipecat venv at {python.parent.parent}: run "
                         f"`./task peer-venv` (or pass --skip-peer)")
    cmd = [str(python), "-m", "glyphoxa_cli.peer_bench", "--turns", str(turns), "--pace", str(pace),
           "--sessions", *map(str, session_counts)]
    if frames_dir is not None:
        cmd += ["--frames", str(frames_dir)]
    # a session count runs 1 s + turns x (reply heard + 0.5-1.5 s), plus a warm-up session
    timeout = 120 + len(session_counts) * (turns + 2) * 10
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"glyphoxa bench: the Pipecat peer failed ({result.returncode}):\n"
                         f"{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_side_by_side(ours: list[dict], peer: dict) -> None:
    """One table: overhead p50/p99 and sessions per core, ours and Pipecat's, same run."""
    print(f"== side by side with Pipecat {peer['pipecat']} (one in-process pipeline per session, all "
          f"sessions in one process): utterance end -> first opus frame out, same fakes, same pacing")
    print("(ours: the stack's processes; +edge/vad: with the bench process, which plays every "
          "session's edge and vad; sessions/core = sessions / cores used over the run)")
    print(f"{'sessions':>8} | {'ours p50':>8} {'p99':>7} | {'pipecat p50':>11} {'p99':>7} | "
          f"{'ours cores':>10} {'sess/core':>9} | {'+edge/vad':>9} {'sess/core':>9} | "
          f"{'pipecat cores':>13} {'sess/core':>9}")
    by_n = {r["sessions"]: r for r in peer["rows"]}
    for r in ours:
        p = by_n.get(r["sessions"])
        if p is None:
            continue
        n = r["sessions"]
        both = r["cpu_share"] + r["bench_cpu_share"]
        print(f"{n:>8} | {r['p50_ms']:>8.1f} {r['p99_ms']:>7.1f} | {p['p50_ms']:>11.1f} {p['p99_ms']:>7.1f} | "
              f"{r['cpu_share']:>10.2f} {n / r['cpu_share']:>9.1f} | {both:>9.2f} {n / both:>9.1f} | "
              f"{p['cpu_share']:>13.2f} {n / p['cpu_share']:>9.1f}")
    for p in peer["rows"]:
        stt, llm, sentence, audio = p["hops_p50"]
        print(f"pipecat {p['sessions']:>3} sessions, p50 cumulative: stt final {stt:.1f}, llm context "
              f"{llm:.1f}, first sentence into tts {sentence:.1f}, first audio {audio:.1f} ms")


# --- 2. recall on the turn path --------------------------------------------------------------

PLAYERS = ["sam", "alex", "jo", "riley"]
ASKS = ["how much for {item}", "have you seen {who} pass through here", "what do you know about {place}",
        "could you take a look at {item}", "do you remember what we promised you about {thing}",
        "is it true that {who} was seen near {place}", "would you trade {item} for news about {thing}",
        "can you keep {item} safe for us until we come back", "tell me again about {thing}"]
ITEMS = ["the longsword", "this old amulet", "my broken shield", "the silver dagger", "a map of the mines",
         "the iron key", "these dwarven gauntlets", "the sealed letter"]
WHO = ["a hooded stranger", "the mayor's son", "an elven courier", "the old hermit", "a bard called Pell"]
PLACES = ["the ruins north of the river", "the old mine", "the chapel crypt", "the docks",
          "the Whispering Wood", "the dragon's pass"]
THINGS = ["the dragon", "the lost crown of the old king", "the fire in the granary", "the festival",
          "the stolen relic", "the debt we owe you"]
TAILS = ["", " We're in a hurry.", " And don't tell the guards.",
         " I'm asking because the road ahead looks dangerous and we'd rather know what waits for us."]
REPLIES = ["Hmph. {n} gold, and not a copper less.", "Aye, I remember. You don't forget a thing like that.",
           "The road to {place} isn't what it used to be.", "Talk to {who}; they know more than I do.",
           "Bring me {item} and we'll talk.", "You're the third one asking about {thing} this week.",
           "I'd stay away from {place}, if I were you.", "Some things are better left buried."]


def _fill(rng: np.random.Generator, template: str) -> str:
    return template.format(item=rng.choice(ITEMS), who=rng.choice(WHO), place=rng.choice(PLACES),
                           thing=rng.choice(THINGS), n=int(rng.integers(5, 200)))


OPENERS = ["", "listen, ", "quick question: ", "before we go, ", "one more thing, ", "be honest, ",
           "between us, ", "if you don't mind me asking, "]


def player_lines(count: int, seed: int) -> list[str]:
    """``count`` different lines a player says to Greta: 40-190 characters, 10-45 tokens (once
    every combination is used, lines repeat)."""
    rng = np.random.default_rng(seed)
    lines: list[str] = []
    seen: set[str] = set()
    for _ in range(count * 50):
        if len(lines) == count:
            break
        line = f"Greta, {rng.choice(OPENERS)}{_fill(rng, str(rng.choice(ASKS)))}?{rng.choice(TAILS)}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    while len(lines) < count:
        lines.append(lines[len(lines) % len(seen)])
    return lines


def fill_memories(dsn: str, count: int) -> None:
    """``count`` heard exchanges of Greta's in the bench campaign, from earlier sessions (over
    the last 120 days), embedded with session-control's local model as its indexer would."""
    import psycopg

    from glyphoxa_memory.local import LocalEmbedder  # the workspace's; session-control's dependency

    rng = np.random.default_rng(16)
    lines = player_lines(count, seed=1)
    texts = [f"{rng.choice(PLAYERS)} to Greta: {line}\nGreta: {_fill(rng, str(rng.choice(REPLIES)))}"
             for line in lines]
    embedder = LocalEmbedder(threads=os.cpu_count() or 1)
    vectors = np.concatenate([embedder.embed_sync(texts[n:n + 32]) for n in range(0, count, 32)])
    now = time.time()
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor().copy(
            "COPY memories (tenant_id, campaign_id, session_id, turn_id, kind, speaker, npc, present,"
            " witnesses, player_text, npc_text, played, text, spoken_at, embedding, embed_model)"
            " FROM STDIN") as copy:
        for n, (line, text, vector) in enumerate(zip(lines, texts, vectors, strict=True)):
            at = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(now - float(rng.uniform(1, 120)) * 86400))
            copy.write_row((TENANT, "bench", f"earlier{n // 100}", f"t{n}", "exchange", "sam", "greta",
                            ["greta"], ["greta"], line, text.split("\n", 1)[1][7:], True, text, at,
                            "[" + ",".join(repr(float(v)) for v in vector) + "]", embedder.name))


def scraped(port: int) -> Iterator[Sample]:
    """Every sample a process's ``/metrics`` shows now."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        yield from family.samples


def recall_metrics(port: int) -> dict:
    """npc-brain's recall counters and its recall_seconds histogram (cumulative buckets)."""
    found: dict = {"results": {}, "buckets": [], "count": 0, "sum": 0.0}
    for s in scraped(port):
        if s.name == "glyphoxa_npc_brain_recall_total":
            found["results"][s.labels["result"]] = int(s.value)
        elif s.name == "glyphoxa_npc_brain_recall_seconds_bucket":
            found["buckets"].append((float(s.labels["le"]), int(s.value)))
        elif s.name == "glyphoxa_npc_brain_recall_seconds_count":
            found["count"] = int(s.value)
        elif s.name == "glyphoxa_npc_brain_recall_seconds_sum":
            found["sum"] = float(s.value)
    return found


GC_STAGES = ("stt", "npc-brain", "tts")


def gc_pauses(stack: Stack) -> dict[str, tuple[int, int, float]]:
    """Each stage's garbage collections so far (``glyphoxa_gc_pause_seconds``): how many,
    how many paused it 5 ms or more, and their seconds in all."""
    out = {}
    for stage in GC_STAGES:
        count = slow = 0
        total = 0.0
        for s in scraped(stack.by_name(f"{stage}-1").metrics_port):
            if s.name == "glyphoxa_gc_pause_seconds_count":
                count += int(s.value)
                slow += int(s.value)
            elif s.name == "glyphoxa_gc_pause_seconds_bucket" and s.labels["le"] == "0.005":
                slow -= int(s.value)
            elif s.name == "glyphoxa_gc_pause_seconds_sum":
                total += s.value
        out[stage] = (count, slow, total)
    return out


PHASES = ("campaign", "embed", "query", "total")


def recall_phases(port: int) -> dict[str, tuple[int, float]]:
    """session-control's recall_seconds by phase: (count, mean seconds)."""
    counts: dict[str, int] = {}
    sums: dict[str, float] = {}
    for s in scraped(port):
        if s.name == "glyphoxa_session_control_recall_seconds_count":
            counts[s.labels["phase"]] = int(s.value)
        elif s.name == "glyphoxa_session_control_recall_seconds_sum":
            sums[s.labels["phase"]] = float(s.value)
    return {phase: (n, sums.get(phase, 0.0) / n) for phase, n in counts.items() if n}


def bucket_quantile(buckets: list[tuple[float, int]], q: float) -> str:
    """The upper bound of the bucket holding quantile ``q`` (what a histogram can say)."""
    total = buckets[-1][1] if buckets else 0
    for le, n in buckets:
        if total and n >= q * total:
            return f"<= {le * 1000:g} ms" if le != float("inf") else "> 1 s"
    return "n/a"


def run_memory_bench(session_counts: list[int], turns: int, memories: int) -> list[dict]:
    script = Path(tempfile.mkdtemp(prefix="glyphoxa-bench-stt-")) / "lines.json"
    # every session says lines of its own (no table repeats another's), as many as any run
    # needs: recall caches the vector of a line it was asked before
    spread = turns + 4
    script.write_text(json.dumps(player_lines(spread * (1 + sum(session_counts)), seed=2)))
    out = []
    try:
        for label, recall_on in (("without memory (BRAIN_RECALL=false)", False),
                                 ("with memory (BRAIN_RECALL=true)", True)):
            metrics: dict = {}
            rows = run_bus_bench(session_counts, turns, env={
                "STT_FAKE_SCRIPT": str(script), "STT_FAKE_SCRIPT_SPREAD": str(spread),
                "BRAIN_RECALL": "true" if recall_on else "false",
                "MEMORY_EMBEDDER": "local"}, memories=memories, recall=metrics)
            out.append({"label": label, "recall": recall_on, "rows": rows, "metrics": metrics})
    finally:
        shutil.rmtree(script.parent, ignore_errors=True)
    return out


def print_memory_bench(runs: list[dict], memories: int) -> None:
    print(f"== recall on the turn path: utterance end published -> first audio frame published, "
          f"without and with recall (instant fakes, fake stt hearing a line of its own each turn, 40-200 "
          f"characters, {memories} embedded memories of the NPC in the campaign)")
    print(f"{'':38} {'sessions':>8} {'turns':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for run in runs:
        for r in run["rows"]:
            print(f"{run['label']:38} {r['sessions']:>8} {r['turns']:>6} {r['p50_ms']:>8.1f} "
                  f"{r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f}")
    without, with_ = runs[0]["rows"], runs[1]["rows"]
    for a, b in zip(without, with_, strict=True):
        print(f"{'difference (with - without)':38} {a['sessions']:>8} {'':>6} "
              f"{b['p50_ms'] - a['p50_ms']:>+8.1f} {b['p95_ms'] - a['p95_ms']:>+8.1f} "
              f"{b['p99_ms'] - a['p99_ms']:>+8.1f}")
    m = runs[1]["metrics"]
    if m.get("count"):
        buckets = ", ".join(f"<= {le * 1000:g} ms: {n}" for le, n in m["buckets"] if le != float("inf"))
        print(f"npc-brain recall_seconds: {m['count']} recalls, mean {m['sum'] / m['count'] * 1000:.1f} ms, "
              f"p50 {bucket_quantile(m['buckets'], 0.5)}, p95 {bucket_quantile(m['buckets'], 0.95)}; "
              f"cumulative: {buckets}")
    if m.get("phases"):
        print("session-control recall_seconds, mean by phase: " + ", ".join(
            f"{phase} {mean * 1000:.2f} ms" for phase, (_, mean) in sorted(
                m["phases"].items(), key=lambda kv: PHASES.index(kv[0]) if kv[0] in PHASES else 9)))
    print(f"npc-brain recall_total by result: with {m.get('results', {})}, "
          f"without {runs[0]['metrics'].get('results', {})}")


def loop_mark_s(steps: int = 10_000_000, tries: int = 3) -> float:
    """Seconds for an empty Python loop of ``steps`` steps (best of ``tries``): a mark of the
    machine's speed at the time of a run. The VM this is developed on varies by 2-3x over a
    day; runs on different days compare where their marks match."""
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        for _ in range(steps):
            pass
        best = min(best, time.perf_counter() - started)
    return best


def main(args: argparse.Namespace) -> int:
    if args.memories < 0 or args.turns < 1 or not args.sessions or min(args.sessions) < 1:
        print("glyphoxa: error: bench: --memories must be >= 0, --turns and every --sessions "
              ">= 1", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} cores, a 10-million-step Python loop {loop_mark_s():.2f} s "
          f"(best of 3); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    if not args.memory_only:
        print("== bus overhead: utterance end published -> first audio frame published "
              "(instant fake providers, every service a process)")
        rows = run_bus_bench(args.sessions, args.turns, env=BUS_ONLY, pace=PACINGS[args.pacing])
        print(f"(pacing: {args.pacing}; cpu: the stack's processes, in cores, over the run)")
        print(f"{'sessions':>8} {'turns':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'cpu':>6}")
        for r in rows:
            stt, sentence, audio = r["hops_p50"]
            tail = "/".join(f"{ms:.1f}" for ms in r["hops_p99"])
            print(f"{r['sessions']:>8} {r['turns']:>6} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f}"
                  f" {r['cpu_share']:>6.2f}"
                  f"   (p50 cumulative: stt final {stt:.1f}, first sentence {sentence:.1f}, first audio {audio:.1f};"
                  f" p99 {tail})")
            print("         cpu by process: " + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_by_process"].items()))
            print("         garbage collections (>= 5 ms, ms paused): " + ", ".join(
                f"{k} {n} ({slow}, {paused * 1000:.0f})" for k, (n, slow, paused) in r["gc"].items()))
        if not args.skip_peer:
            peer = run_peer_bench(args.sessions, args.turns, PACINGS[args.pacing])
            print_side_by_side(rows, peer)
    if not args.skip_memory:
        runs = run_memory_bench(args.sessions, args.turns, args.memories)
        print_memory_bench(runs, args.memories)
    if not args.skip_providers and not args.memory_only:
        from glyphoxa_cli.providers_bench import run_provider_bench

        run_provider_bench()
    return 0
