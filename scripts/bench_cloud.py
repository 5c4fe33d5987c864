#!/usr/bin/env python3
"""Speech end -> first audio with the cloud providers' fakes at typical cloud latencies.

    .venv/bin/python scripts/bench_cloud.py [--sessions 1 5] [--turns 20] [--deepgram-final-ms 250] ...

The whole stack runs as processes (session-control with PostgreSQL, stt with
``STT_PROVIDER=deepgram``, npc-brain with ``gemini``, tts with ``elevenlabs``); the three
providers are the wire-compatible fakes of ``tests/support/fakes``, each a process of its
own (``python -m tests.support.fakes.<vendor>``): their work (espeak for ElevenLabs' audio,
JSON, websockets) stays out of this process's event loop, whose timestamps are the
measurement. Each fake waits as long as the real service typically takes (the defaults and
their sources are in docs/benchmarks.md):

* Deepgram: every result 250 ms after what caused it, so the final ~250 ms after
  ``Finalize``; it hears the scripted line, addressed to the NPC.
* Gemini: first chunk 500 ms after the request (flash, thinking off), then ~200 tokens/s.
* ElevenLabs: first audio 75 ms (Flash v2.5) + 200 ms (network) after the request.

The bench plays the edge and vad, as vad really publishes for a Discord-style edge (frames
only while a player talks, then five 20 ms silence frames): the utterance start once
``VAD_MIN_SPEECH_MS`` of speech is in, ``VAD_CHUNK_MS`` chunks of speech-like noise as they
fill in real time, the edge's trailing silence, then nothing until vad's idle timer (a tick
every 50 ms) sees ``VAD_MIN_SILENCE_MS`` since the speech ended and ends the utterance.
Measured on the first opus frame of the reply published on ``audio.out``
(``Glx-Published-Ns``): from the speech end (capture time of the last speech sample) and
from the moment the utterance end was published. The services inherit this process's
environment: ``STT_EARLY_FINALS=true .venv/bin/python scripts/bench_cloud.py`` tries a setting.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nats.aio.client import Client
from nats.aio.msg import Msg

from glyphoxa_bus.connection import BusSettings, connect
from glyphoxa_bus.heartbeat import EDGE_ROLE, HeartbeatPublisher, heartbeating
from glyphoxa_bus.publisher import Publisher
from glyphoxa_cli.bench import TENANT, api_call, percentile, prepare_tenant
from glyphoxa_cli.processes import stop_process
from glyphoxa_cli.stack import Stack
from glyphoxa_events import headers as H
from glyphoxa_events.api import StartSession, StopSession
from glyphoxa_events.models import (
    AudioDone,
    TurnEnded,
    UtteranceEnded,
    UtteranceStarted,
    parse_control,
)
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_vad.config import Settings as VadSettings

ROOT = Path(__file__).resolve().parents[1]
RATE = 16_000
VAD = VadSettings.model_fields
LINE = "Greta, how much for the longsword?"
REPLY = "Forty gold, and not a copper less. Dwarven steel does not come cheap."
WORDS_PER_LLM_CHUNK = 4
TARGET_P50_MS, TARGET_P95_MS = 900.0, 1500.0
HOPS = ("vad end", "stt final", "first token", "first sentence", "first audio")
KEYS = {"deepgram": "bench-deepgram-key", "gemini": "bench-gemini-key",
        "elevenlabs": "bench-elevenlabs-key"}


# --- the fakes --------------------------------------------------------------------------


@dataclass(frozen=True)
class CloudLatency:
    deepgram_final_ms: float
    gemini_first_token_ms: float
    gemini_tokens_per_s: float
    elevenlabs_model_ms: float
    elevenlabs_network_ms: float
    elevenlabs_chunk_delay_ms: float

    def fake_args(self, line: str, reply: str, speech_ms: float) -> dict[str, list[str]]:
        """Each fake's command line (Deepgram hears the line's words at the pace of the
        speech, so its interims have the whole line by the speech's end)."""
        chunks = max(1, math.ceil(len(reply.split()) / WORDS_PER_LLM_CHUNK))
        tokens = len(reply) / 4  # ~4 characters a token
        chunk_s = tokens / chunks / self.gemini_tokens_per_s if self.gemini_tokens_per_s else 0
        return {
            "deepgram": ["--text", line, "--latency-s", f"{self.deepgram_final_ms / 1000}",
                         "--words-per-s", f"{len(line.split()) / (speech_ms / 1000):.3f}"],
            "gemini": ["--text", reply, "--chunks", str(chunks), "--first-chunk-delay",
                       f"{self.gemini_first_token_ms / 1000}", "--chunk-delay", f"{chunk_s:.4f}"],
            "elevenlabs": ["--first-chunk-delay",
                           f"{(self.elevenlabs_model_ms + self.elevenlabs_network_ms) / 1000}",
                           "--chunk-delay", f"{self.elevenlabs_chunk_delay_ms / 1000}"],
        }


@dataclass
class FakeVendor:
    vendor: str
    args: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    url: str = ""

    def start(self) -> FakeVendor:
        """Start ``python -m tests.support.fakes.<vendor>`` and read the URL it prints."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"tests.support.fakes.{self.vendor}", "--port", "0",
                 "--api-key", KEYS[self.vendor], *self.args],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"fake {self.vendor} did not start; see {self.log_path}")
        return self

    def stop(self) -> None:
        stop_process(self.proc)


def stack_env(urls: dict[str, str]) -> dict[str, str]:
    return {
        "STT_PROVIDER": "deepgram", "STT_DEEPGRAM_API_KEY": KEYS["deepgram"],
        "STT_DEEPGRAM_BASE_URL": urls["deepgram"],
        "STT_DEEPGRAM_WS_URL": urls["deepgram"].replace("http://", "ws://", 1),
        "BRAIN_LLM_PROVIDER": "gemini", "BRAIN_GEMINI_API_KEY": KEYS["gemini"],
        "BRAIN_GEMINI_BASE_URL": urls["gemini"],
        "TTS_PROVIDER": "elevenlabs", "TTS_ELEVENLABS_API_KEY": KEYS["elevenlabs"],
        "TTS_ELEVENLABS_BASE_URL": urls["elevenlabs"],
        "LOG_LEVEL": "warning", **{f"{s}_CAPACITY": "32" for s in ("STT", "BRAIN", "TTS")},
    }


# --- one player at one table, as vad publishes them -------------------------------------


@dataclass(frozen=True)
class Pacing:
    speech_ms: int
    chunk_ms: int
    min_speech_ms: int
    min_silence_ms: int
    edge_silence_ms: int
    tick_ms: int = 50
    """serve_session's tick: vad's idle timer looks this often."""


@dataclass
class Turn:
    speech_end_ns: int
    end_published_ns: int
    first_audio_ns: int = 0
    ended: TurnEnded | None = None

    def hops_ms(self) -> list[float]:
        """Cumulative from the speech end: vad end, stt final, first token, first sentence,
        first audio."""
        lat = self.ended.latency if self.ended else None
        marks = [self.end_published_ns, *(
            (lat.stt_final_ns, lat.first_token_ns, lat.first_sentence_ns) if lat else (0,) * 3),
            self.first_audio_ns]
        return [(m - self.speech_end_ns) / 1e6 if m else math.nan for m in marks]


def speech_like(ms: int, rng: np.random.Generator) -> np.ndarray:
    """Band-limited noise at ~-20 dBFS, its loudness swinging ~4 times a second like syllables
    (every 20 ms frame stays well above the fake Deepgram's -40 dBFS speech threshold)."""
    n = ms * RATE // 1000
    noise = np.convolve(rng.normal(0, 1, n), np.ones(6) / 6, mode="same")
    t = np.arange(n) / RATE
    x = noise * (0.4 + 0.6 * np.abs(np.sin(np.pi * 4 * t + rng.uniform(0, np.pi))))
    x *= 0.1 * 32768 / np.sqrt(np.mean(x * x))
    return np.clip(x, -32768, 32767).astype(np.int16)


async def sleep_until(ns: int) -> None:
    await asyncio.sleep(max(0.0, (ns - time.time_ns()) / 1e9))


class Table:
    """One session: a player speaking to Greta, what comes back, and the turns' timings."""

    def __init__(self, nc: Client, name: str, pacing: Pacing, live: set[str],
                 rng: np.random.Generator):
        self.nc, self.name, self.pacing, self.live, self.rng = nc, name, pacing, live, rng
        self.publisher = Publisher(nc, 64)
        self.session = ""
        self.subjects = SessionSubjects(TENANT, "none")
        self.turns: list[Turn] = []
        self.first_audio: dict[str, int] = {}
        self.ended: dict[str, TurnEnded] = {}
        self.arrived: dict[str, asyncio.Event] = {}
        self.spoken: dict[str, asyncio.Event] = {}

    async def play(self, turns: int, start_delay_s: float = 0.0) -> list[Turn]:
        reply = await api_call(self.nc, "session.start", StartSession(
            tenant=TENANT, campaign="bench", session=f"{self.name}-{time.time_ns() % 10**9}",
            edge="sim"))
        self.session = reply.session.session  # type: ignore[union-attr]
        self.subjects = SessionSubjects(TENANT, self.session)
        subs = [await self.nc.subscribe(self.subjects.audio_out("*"), cb=self._on_audio),
                await self.nc.subscribe(self.subjects.ctl(">"), cb=self._on_control)]
        self.live.add(f"{TENANT}.{self.session}")
        await asyncio.sleep(1.0 + start_delay_s)  # the stages claim the session
        try:
            for i in range(turns):
                await self._turn(f"alex-{i * 1000}")
        finally:
            for sub in subs:
                await sub.unsubscribe()
            self.live.discard(f"{TENANT}.{self.session}")
            await api_call(self.nc, "session.stop", StopSession(tenant=TENANT, session=self.session))
        return self.turns

    async def _on_audio(self, msg: Msg) -> None:
        turn = (msg.headers or {}).get(H.TURN, "")
        if turn not in self.first_audio:
            self.first_audio[turn] = int((msg.headers or {})[H.PUBLISHED_NS])
            self.arrived.setdefault(turn, asyncio.Event()).set()

    async def _on_control(self, msg: Msg) -> None:
        event = parse_control(msg.data)
        if isinstance(event, TurnEnded):
            self.ended[event.turn_id] = event
        elif isinstance(event, AudioDone):
            self.spoken.setdefault(event.turn_id, asyncio.Event()).set()

    async def _turn(self, utt: str) -> None:
        speech_end_ns, end_ns = await self._speak(utt)
        try:
            await asyncio.wait_for(self.arrived.setdefault(utt, asyncio.Event()).wait(), 30)
        except TimeoutError:
            raise RuntimeError(f"{self.session}/{utt}: no reply audio within 30 s "
                               f"(turn: {self.ended.get(utt)})") from None
        turn = Turn(speech_end_ns, end_ns, self.first_audio[utt])
        for _ in range(100):  # the turn event follows the reply's last sentence
            if utt in self.ended:
                break
            await asyncio.sleep(0.01)
        turn.ended = self.ended.get(utt)
        self.turns.append(turn)
        # like a table: the next line comes after the NPC's audio is out, plus a pause
        await asyncio.wait_for(self.spoken.setdefault(utt, asyncio.Event()).wait(), 30)
        await asyncio.sleep(float(self.rng.uniform(0.5, 1.5)))

    async def _speak(self, utt: str) -> tuple[int, int]:
        """vad's output for one line: start, chunks as they fill, the end after the silence.
        Returns the speech end (capture time) and when the end was published."""
        p = self.pacing
        edge_silence = min(p.edge_silence_ms, p.min_silence_ms)  # vad ends it after that
        pcm = np.concatenate([speech_like(p.speech_ms, self.rng),
                              np.zeros(edge_silence * RATE // 1000, np.int16)])
        t0 = time.time_ns()  # capture time of the first speech sample (the utterance's start)
        speech_end = t0 + p.speech_ms * 1_000_000
        end_at = speech_end + self._end_delay_ns()
        key, subject = f"vad:{TENANT}.{self.session}:{utt}", self.subjects.vad("alex")
        await sleep_until(t0 + p.min_speech_ms * 1_000_000)
        await self.publisher.publish(subject, UtteranceStarted(
            utterance_id=utt, speaker="alex", start_ns=t0).to_bytes(), f"{key}:start",
            {H.KIND: "start", H.UTTERANCE: utt})
        step = p.chunk_ms * RATE // 1000
        bounds = [*range(0, len(pcm), step), len(pcm)]
        for n, (a, b) in enumerate(zip(bounds, bounds[1:])):
            # a full chunk goes out once its last sample is captured, the rest with the end
            await sleep_until(t0 + b * 1_000_000_000 // RATE if b - a == step else end_at)
            await self.publisher.publish(subject, pcm[a:b].tobytes(), f"{key}:{n}",
                                         {H.KIND: "audio", H.UTTERANCE: utt, H.SEQ: str(n)})
        await sleep_until(end_at)
        end_ns = time.time_ns()
        await self.publisher.publish(subject, UtteranceEnded(
            utterance_id=utt, speaker="alex", start_ns=t0, speech_end_ns=speech_end,
            chunks=len(bounds) - 1, audio_ms=len(pcm) * 1000 // RATE, vad_end_ns=end_ns,
        ).to_bytes(), f"{key}:end", {H.KIND: "end", H.UTTERANCE: utt})
        return speech_end, end_ns

    def _end_delay_ns(self) -> int:
        """How long after the speech vad ends the utterance: on the audio that completes the
        silence, or (the edge went quiet first) at the first idle tick after it."""
        p = self.pacing
        tick = 0.0 if p.edge_silence_ms >= p.min_silence_ms else self.rng.uniform(0, p.tick_ms)
        return int((p.min_silence_ms + tick) * 1_000_000)


# --- the runs ----------------------------------------------------------------------------


async def run_tables(nats_url: str, pacing: Pacing, sessions: int, turns: int,
                     warmup: int) -> list[Turn]:
    nc = await connect(BusSettings(url=nats_url), name="bench-cloud")
    live: set[str] = set()
    # the bench is the edge and publishes what vad would: it heartbeats as both
    edge, vad = (HeartbeatPublisher(nc, role, f"bench-cloud-{os.getpid()}",
                                    lambda: sorted(live), capacity=1000)
                 for role in (EDGE_ROLE, "vad"))
    rng = np.random.default_rng(sessions)
    try:
        async with heartbeating(edge), heartbeating(vad):
            if warmup:  # connections, consumers, the fakes' first espeak synthesis
                await Table(nc, "warmup", pacing, live, rng).play(warmup)
            tables = [Table(nc, f"cloud{i}", pacing, live, np.random.default_rng([sessions, i]))
                      for i in range(sessions)]
            # tables do not start in lockstep: each begins within the first 2 s
            results = await asyncio.gather(*(t.play(turns, 2.0 * i / sessions)
                                             for i, t in enumerate(tables)))
    finally:
        await nc.close()
    return [turn for r in results for turn in r]


def summarize(sessions: int, turns: list[Turn]) -> dict:
    from_speech = [(t.first_audio_ns - t.speech_end_ns) / 1e6 for t in turns]
    from_end = [(t.first_audio_ns - t.end_published_ns) / 1e6 for t in turns]
    hops = np.asarray([t.hops_ms() for t in turns])
    return {"sessions": sessions, "turns": len(turns),
            "speech": [percentile(from_speech, 50), percentile(from_speech, 95), max(from_speech)],
            "end": [percentile(from_end, 50), percentile(from_end, 95), max(from_end)],
            "hops_p50": [float(np.nanpercentile(hops[:, i], 50)) for i in range(len(HOPS))],
            "answered": sum(1 for t in turns if t.ended and t.ended.outcome == "answered")}


def print_table(rows: list[dict]) -> None:
    print("\n== speech end -> first audio frame published on audio.out (ms)")
    print(f"{'sessions':>8} {'turns':>6} | {'p50':>7} {'p95':>7} {'max':>7} | "
          f"{'end->audio p50':>14} {'p95':>7} {'max':>7} | p50 from speech end: "
          + " / ".join(HOPS))
    for r in rows:
        print(f"{r['sessions']:>8} {r['turns']:>6} | {r['speech'][0]:>7.0f} {r['speech'][1]:>7.0f} "
              f"{r['speech'][2]:>7.0f} | {r['end'][0]:>14.0f} {r['end'][1]:>7.0f} "
              f"{r['end'][2]:>7.0f} | " + " / ".join(f"{h:.0f}" for h in r["hops_p50"]))
    for r in rows:
        p50, p95 = r["speech"][:2]
        met = p50 <= TARGET_P50_MS and p95 <= TARGET_P95_MS
        print(f"target at {r['sessions']} session(s) (speech end -> first audio p50 <= "
              f"{TARGET_P50_MS:.0f} ms, p95 <= {TARGET_P95_MS:.0f} ms): "
              f"{'met' if met else 'NOT met'} (p50 {p50:.0f}, p95 {p95:.0f}); "
              f"{r['answered']}/{r['turns']} turns answered")


def stack_problems(home: Path, limit: int = 20) -> list[str]:
    """Warning and error lines of the stack's and the fakes' logs."""
    lines = []
    for log in sorted((home / "logs").glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if '"level": "warning"' in line or '"level": "error"' in line or "Traceback" in line:
                lines.append(f"{log.name}: {line[:400]}")
    return lines[-limit:]


def run(args: argparse.Namespace) -> list[dict]:
    latency = CloudLatency(args.deepgram_final_ms, args.gemini_first_token_ms,
                           args.gemini_tokens_per_s, args.elevenlabs_model_ms,
                           args.elevenlabs_network_ms, args.elevenlabs_chunk_delay_ms)
    pacing = Pacing(args.speech_ms, args.chunk_ms, args.min_speech_ms, args.min_silence_ms,
                    args.edge_silence_ms)
    home = Path(tempfile.mkdtemp(prefix="glyphoxa-bench-cloud-"))
    home.chmod(0o755)  # as root, PostgreSQL runs as `nobody` and must reach its data
    (home / "logs").mkdir()
    fakes = [FakeVendor(v, a, home / "logs" / f"fake-{v}.log")
             for v, a in latency.fake_args(args.line, args.reply, args.speech_ms).items()]
    stack: Stack | None = None
    ok = False
    try:
        urls = {f.vendor: f.start().url for f in fakes}
        stack = Stack(home, env=stack_env(urls),
                      services=("session-control", "stt", "npc-brain", "tts"))
        stack.start(progress=lambda s: None)
        asyncio.run(prepare_tenant(stack.api_url, stack.keys()["operator_key"]))
        rows = []
        for n in args.sessions:
            turns = asyncio.run(run_tables(stack.nats_url or "", pacing, n, args.turns,
                                           args.warmup_turns))
            rows.append(summarize(n, turns))
        ok = True
        return rows
    finally:
        if stack is not None:
            stack.stop()
        for fake in fakes:
            fake.stop()
        problems = stack_problems(home)
        if problems or not ok or args.keep_home:
            print(f"\nstack and fake logs kept in {home / 'logs'}", file=sys.stderr)
            print("\n".join(problems), file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 5],
                   help="concurrent sessions, one run each")
    p.add_argument("--turns", type=int, default=20, help="turns per session")
    p.add_argument("--warmup-turns", type=int, default=2,
                   help="turns of one session before the runs (not measured)")
    cloud = p.add_argument_group("cloud latencies (sources: docs/benchmarks.md)")
    cloud.add_argument("--deepgram-final-ms", type=float, default=250,
                       help="Deepgram: each result after what caused it (the final after Finalize)")
    cloud.add_argument("--gemini-first-token-ms", type=float, default=500,
                       help="Gemini flash, thinking off: first chunk after the request")
    cloud.add_argument("--gemini-tokens-per-s", type=float, default=200,
                       help="Gemini: streaming rate after the first chunk (0: all at once)")
    cloud.add_argument("--elevenlabs-model-ms", type=float, default=75,
                       help="ElevenLabs Flash v2.5 model latency")
    cloud.add_argument("--elevenlabs-network-ms", type=float, default=200,
                       help="network and queueing before ElevenLabs' first audio byte")
    cloud.add_argument("--elevenlabs-chunk-delay-ms", type=float, default=25,
                       help="between 100 ms chunks of audio (25: 4x faster than real time)")
    talk = p.add_argument_group("the player, and vad (defaults: VAD_* settings)")
    talk.add_argument("--speech-ms", type=int, default=1500, help="length of each line")
    talk.add_argument("--chunk-ms", type=int, default=VAD["chunk_ms"].default,
                      help="PCM chunks vad publishes (VAD_CHUNK_MS)")
    talk.add_argument("--min-speech-ms", type=int, default=VAD["min_speech_ms"].default,
                      help="speech before vad opens the utterance (VAD_MIN_SPEECH_MS)")
    talk.add_argument("--min-silence-ms", type=int, default=VAD["min_silence_ms"].default,
                      help="silence after which vad ends it (VAD_MIN_SILENCE_MS)")
    talk.add_argument("--edge-silence-ms", type=int, default=100,
                      help="silence the edge sends after speech (Discord: five 20 ms frames)")
    talk.add_argument("--line", default=LINE, help="what the fake Deepgram hears")
    talk.add_argument("--reply", default=REPLY, help="what the fake Gemini answers")
    p.add_argument("--keep-home", action="store_true", help="keep the stack's home and logs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("== cloud providers' fakes at typical cloud latencies (every service a process): "
          f"Deepgram final {args.deepgram_final_ms:.0f} ms after Finalize, Gemini first token "
          f"{args.gemini_first_token_ms:.0f} ms then {args.gemini_tokens_per_s:.0f} tokens/s, "
          f"ElevenLabs first audio {args.elevenlabs_model_ms + args.elevenlabs_network_ms:.0f} ms; "
          f"lines of {args.speech_ms} ms, vad ends them {args.min_silence_ms} ms after the speech")
    tried = {k: v for k, v in sorted(os.environ.items())
             if k.split("_", 1)[0] in ("VAD", "STT", "BRAIN", "TTS")
             and not any(w in k for w in ("KEY", "SECRET", "TOKEN", "PASSWORD"))}
    print("settings from the environment: "
          + (" ".join(f"{k}={v}" for k, v in tried.items()) or "none (the services' defaults)"))
    print_table(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
