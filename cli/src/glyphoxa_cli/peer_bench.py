"""The peer of ``glyphoxa bench`` part 1 (issue 17): the same instant turn through Pipecat.

One in-process Pipecat pipeline per session, as Pipecat's users run a bot (a
``PipelineWorker`` and its ``PipelineRunner`` per session; N sessions are N asyncio tasks in
this one process):

    stt (SegmentedSTTService) -> user aggregator -> llm (LLMService) -> tts (TTSService)
        -> opus sink -> assistant aggregator

doing the work of our fakes with our own code: the stt is ``glyphoxa_stt``'s ``FakeStt``
(the same text), the llm answers with ``glyphoxa_npc_brain``'s ``fake_reply`` streamed in the
same word pieces as ``FakeLLM``, the tts speaks each sentence with ``glyphoxa_tts``'s fake
voice (``FakeProvider.synthesize``: the same 48 kHz PCM) and the sink encodes it with
``glyphoxa_tts``'s ``FrameEncoder`` (20 ms frames, 48 kHz stereo opus, as our tts publishes
them for Discord). Context and turn-taking are Pipecat's own (``LLMContext``,
``LLMContextAggregatorPair``, its sentence aggregation before tts); the end of the user's
turn is decided by ``SpeechTimeoutUserTurnStopStrategy`` with no extra wait, so the turn ends
when the VAD's stop and the final transcript are both in, as in our stack, where vad has
already waited its silence when the clock starts. RTVI is off (no client to talk to).

A turn is played like the bench plays vad's output: the VAD's "user started speaking",
1 s of 16 kHz PCM in 200 ms ``InputAudioRawFrame``s (the chunks our vad publishes; with table
pacing one every 200 ms, as the player speaks), then after 200 ms of silence the VAD's "user
stopped speaking". Measured: that last frame queued -> the first opus frame of
the reply encoded in the sink (``time.perf_counter_ns``), and the process's CPU time over
each run. Pacing like a table: the next line comes once the reply has been heard (its frames
from the first on, 20 ms each) plus a 0.5-1.5 s pause.

Run in a venv of its own (``./task peer-venv``: Pipecat's pins differ from the workspace's),
by ``glyphoxa bench`` as a subprocess, so its CPU and event loop are its own:

    .venv-peer/bin/python -m glyphoxa_cli.peer_bench --sessions 1 10 20 --turns 20

prints one JSON object: ``{"pipecat": version, "rows": [...]}``. ``--frames DIR`` also writes
each session's first reply's opus frames there (the test decodes them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import resource
import sys
import time
from collections.abc import AsyncGenerator
from importlib.metadata import version
from pathlib import Path

import numpy as np

PCM = (np.random.default_rng(0).normal(0, 2000, 16000)).astype(np.int16).tobytes()
"""The bench's second of "speech" (bench.py plays the same to stt)."""
CHUNK_BYTES = 6400  # 200 ms at 16 kHz, as the bench's vad chunks
CHUNK_S = 0.2
END_SILENCE_S = 0.2  # the bench's: the shortest silence our vad ends a turn on
FRAME_S = 0.02
SPEAKER = "alex"
HOPS: list[tuple[float, ...]] = []  # per turn, ms after the line ended: stt, llm, sentence, audio


def process_cpu_s() -> float:
    """CPU seconds (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_session(stats: Session):  # -> (PipelineWorker, PipelineRunner)
    """One session's pipeline, as a Pipecat bot is built."""
    from pipecat.frames.frames import (
        Frame,
        LLMContextFrame,
        LLMFullResponseEndFrame,
        LLMFullResponseStartFrame,
        LLMTextFrame,
        TranscriptionFrame,
        TTSAudioRawFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.services.llm_service import LLMService
    from pipecat.services.settings import LLMSettings, STTSettings, TTSSettings
    from pipecat.services.stt_service import SegmentedSTTService
    from pipecat.services.tts_service import TTSService
    from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
        SpeechTimeoutUserTurnStopStrategy,
    )
    from pipecat.turns.user_turn_strategies import UserTurnStrategies
    from pipecat.utils.time import time_now_iso8601
    from pipecat.workers.runner import WorkerRunner

    from glyphoxa_campaign.model import VoiceSpec
    from glyphoxa_npc_brain.llm.base import ChatMessage
    from glyphoxa_npc_brain.llm.fake import fake_reply
    from glyphoxa_stt.providers.fake import FakeStt
    from glyphoxa_tts.frames import FrameEncoder
    from glyphoxa_tts.providers.fake import RATE, FakeProvider

    class FakeSTT(SegmentedSTTService):
        """Our fake stt on the utterance's PCM, once the VAD has stopped."""

        def __init__(self) -> None:
            super().__init__(trailing_silence_secs=0.0, ttfs_p99_latency=0.0,
                             settings=STTSettings(model=None, language="en"))
            self._stt = FakeStt().for_session()

        @property
        def wants_wav_segments(self) -> bool:
            return False

        async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
            result = await self._stt.transcribe(np.frombuffer(audio, dtype=np.int16))
            stats.hop("stt")
            yield TranscriptionFrame(result.text, SPEAKER, time_now_iso8601(), finalized=True)

    class FakeLLM(LLMService):
        """``fake_reply`` to the context's last user line, streamed in FakeLLM's pieces."""

        def __init__(self) -> None:
            super().__init__(settings=LLMSettings(
                model=None, system_instruction=None, temperature=None, max_tokens=None, top_p=None,
                top_k=None, frequency_penalty=None, presence_penalty=None, seed=None,
                filter_incomplete_user_turns=None, user_turn_completion_config=None))

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, LLMContextFrame):
                stats.hop("llm")
                line = next((m.get("content") for m in reversed(frame.context.get_messages())
                             if m.get("role") == "user"), "")
                if isinstance(line, list):  # content parts
                    line = " ".join(p.get("text", "") for p in line if isinstance(p, dict))
                reply = fake_reply([ChatMessage("user", str(line or ""))])
                await self.push_frame(LLMFullResponseStartFrame())
                for piece in _pieces(reply):
                    await self.push_frame(LLMTextFrame(piece))
                await self.push_frame(LLMFullResponseEndFrame())
            else:
                await self.push_frame(frame, direction)

    class FakeTTS(TTSService):
        """Our fake voice: the same tone, 60 ms a character, 48 kHz mono."""

        def __init__(self) -> None:
            super().__init__(sample_rate=RATE, push_stop_frames=True,
                             settings=TTSSettings(model=None, voice=None, language="en"))
            self._voice_provider = FakeProvider()
            self._voice = VoiceSpec()

        async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
            stats.hop("sentence")
            async for pcm in self._voice_provider.synthesize(text, self._voice):
                yield TTSAudioRawFrame(pcm.tobytes(), RATE, 1, context_id=context_id)

    class OpusSink(FrameProcessor):
        """What our tts does before it publishes: 20 ms opus frames for Discord."""

        def __init__(self) -> None:
            super().__init__()
            self._encoder: FrameEncoder | None = None

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if direction == FrameDirection.DOWNSTREAM:
                if isinstance(frame, LLMFullResponseStartFrame):
                    self._encoder = FrameEncoder()
                elif isinstance(frame, TTSAudioRawFrame):
                    self._encoder = self._encoder or FrameEncoder()
                    for packet in self._encoder.push(np.frombuffer(frame.audio, dtype=np.int16)):
                        stats.frame_out(packet)
                elif isinstance(frame, LLMFullResponseEndFrame):
                    for packet in (self._encoder.finish() if self._encoder else []):
                        stats.frame_out(packet)
                    self._encoder = None
                    stats.reply_done()
            await self.push_frame(frame, direction)

    context = LLMContext([{"role": "system", "content": "You are Greta, a gruff dwarven blacksmith."}])
    aggregators = LLMContextAggregatorPair(context, user_params=LLMUserAggregatorParams(
        user_turn_strategies=UserTurnStrategies(
            stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.0)])))
    pipeline = Pipeline([FakeSTT(), aggregators.user(), FakeLLM(), FakeTTS(), OpusSink(),
                         aggregators.assistant()])
    worker = PipelineWorker(pipeline, params=PipelineParams(
        audio_in_sample_rate=16_000, audio_out_sample_rate=RATE), enable_rtvi=False,
        idle_timeout_secs=None)
    return worker, WorkerRunner(handle_sigint=False)


def _pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)  # FakeLLM's tokens: each word with its leading space


class Session:
    """One session's clock: when its line ended, its reply's frames."""

    def __init__(self, keep_frames: bool = False) -> None:
        self.end_ns = 0
        self.hops: dict[str, int] = {}
        self.first_ns = 0
        self.frames = 0
        self.first = asyncio.Event()
        self.done = asyncio.Event()
        self.keep = keep_frames
        self.kept: list[bytes] = []
        """The first reply's opus frames, with ``keep_frames`` (the test decodes them)."""

    def hop(self, name: str) -> None:
        """When the turn got past a stage (the first time): stt's final, the llm's context,
        the first sentence into tts."""
        self.hops.setdefault(name, time.perf_counter_ns())

    def start_turn(self) -> None:
        self.first_ns, self.frames = 0, 0
        self.hops = {}
        self.first.clear()
        self.done.clear()

    def frame_out(self, packet: bytes) -> None:
        if not self.first_ns:
            self.first_ns = time.perf_counter_ns()
            self.first.set()
        self.frames += 1
        if self.keep:
            self.kept.append(packet)

    def reply_done(self) -> None:
        if self.frames:
            self.keep = False  # the first reply's frames are kept
        self.done.set()


async def run_session(name: str, turns: int, pace: float, frames_dir: Path | None = None
                      ) -> list[float]:
    from pipecat.frames.frames import (
        EndFrame,
        InputAudioRawFrame,
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )

    stats = Session(keep_frames=frames_dir is not None)
    worker, runner = build_session(stats)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    latencies: list[float] = []
    await asyncio.sleep(1.0)  # as the bench: a table does not speak in its first ms
    try:
        for _ in range(turns):
            stats.start_turn()
            await worker.queue_frame(VADUserStartedSpeakingFrame())
            for n in range(0, len(PCM), CHUNK_BYTES):
                if pace:  # as the bench: the player speaks in real time
                    await asyncio.sleep(CHUNK_S)
                await worker.queue_frame(InputAudioRawFrame(PCM[n:n + CHUNK_BYTES], 16_000, 1))
            if pace:  # and the VAD stops after its silence
                await asyncio.sleep(END_SILENCE_S)
            stats.end_ns = time.perf_counter_ns()
            await worker.queue_frame(VADUserStoppedSpeakingFrame(stop_secs=END_SILENCE_S))
            await asyncio.wait_for(stats.first.wait(), timeout=30)
            latencies.append((stats.first_ns - stats.end_ns) / 1e6)
            HOPS.append(tuple((stats.hops.get(h, stats.first_ns) - stats.end_ns) / 1e6
                              for h in ("stt", "llm", "sentence")) + (latencies[-1],))
            await asyncio.wait_for(stats.done.wait(), timeout=30)
            heard_at = stats.first_ns / 1e9 + stats.frames * FRAME_S * pace
            await asyncio.sleep(max(0.0, heard_at - time.perf_counter()) + float(rng.uniform(0.5, 1.5)))
    finally:
        await worker.queue_frame(EndFrame())
        try:
            await asyncio.wait_for(running, timeout=10)
        except TimeoutError:
            await worker.cancel()
    if frames_dir is not None:
        frames_dir.mkdir(parents=True, exist_ok=True)
        (frames_dir / f"{name}.json").write_text(json.dumps(
            [p.hex() for p in stats.kept]))
    return latencies


def _percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p)) if values else float("nan")


async def run(sessions: int, turns: int, pace: float, frames_dir: Path | None) -> dict:
    cpu, wall = process_cpu_s(), time.monotonic()
    await run_session("warmup", 2, pace)  # as the bench: its warm-up session first
    HOPS.clear()
    results = await asyncio.gather(*(run_session(f"peer{i}", turns, pace, frames_dir)
                                     for i in range(sessions)))
    wall = time.monotonic() - wall
    cpu = process_cpu_s() - cpu
    lat = [x for r in results for x in r]
    hops = np.asarray(HOPS) if HOPS else np.zeros((1, 4))
    HOPS.clear()
    return {"sessions": sessions, "turns": len(lat), "p50_ms": _percentile(lat, 50),
            "p95_ms": _percentile(lat, 95), "p99_ms": _percentile(lat, 99),
            "max_ms": max(lat) if lat else float("nan"), "cpu_share": cpu / wall, "wall_s": wall,
            "hops_p50": [float(np.percentile(hops[:, i], 50)) for i in range(4)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glyphoxa_cli.peer_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--pace", type=float, default=1.0,
                        help="1.0: the next line after the reply has been heard; 0: after its last frame")
    parser.add_argument("--frames", type=Path, default=None, help="write each session's first reply's opus frames here")
    args = parser.parse_args(argv)
    if args.turns < 1 or min(args.sessions) < 1 or args.pace < 0:
        parser.error("--turns and every --sessions must be >= 1, --pace >= 0")
    try:
        pipecat_version = version("pipecat-ai")
    except Exception:
        print("peer_bench: pipecat-ai is not installed here; run it with .venv-peer/bin/python "
              "(./task peer-venv makes it)", file=sys.stderr)
        return 2
    from loguru import logger  # Pipecat logs every frame's journey at DEBUG to stderr

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    logging.getLogger().setLevel(logging.WARNING)
    rows = [asyncio.run(run(n, args.turns, args.pace, args.frames)) for n in args.sessions]
    print(json.dumps({"pipecat": pipecat_version, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
