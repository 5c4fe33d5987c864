"""Test helpers for vad: corpus lines as Discord-style opus frames, a fake engine, a driver.

Discord sends a speaker's frames only while they talk (plus up to five opus silence
frames), so digitally silent frames are not sent at all: the capture-time gap is the silence.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pytest

from glyphoxa_audio.opus import SILENCE_FRAME, OpusEncoder, frames_of
from glyphoxa_audio.wav import read_wav, to_stereo
from glyphoxa_vad.core import AudioFrame, Rejection, SessionVad
from glyphoxa_vad.engines import VadEngine, VadStream
from glyphoxa_vad.segmenter import (
    Output,
    SegmenterConfig,
    TurnCheck,
    UtteranceAudio,
    UtteranceEnd,
    UtteranceStart,
)

CORPUS = Path(os.environ.get("GLYPHOXA_CORPUS", "/work/shared/corpus"))
FRAME_NS = 20_000_000
BASE_NS = 1_700_000_000_000_000_000
STEREO_FRAME = 960  # 20 ms at 48 kHz


def corpus_lines() -> list[dict]:
    path = CORPUS / "lines.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


requires_corpus = pytest.mark.skipif(
    not corpus_lines(),
    reason=f"speech corpus not found at {CORPUS} (set GLYPHOXA_CORPUS to its folder)")


@dataclass(frozen=True)
class Packet:
    """One opus packet of a speaker's track, at ``index`` 20 ms frames into the track."""

    index: int
    data: bytes


def discord_packets(pcm48: np.ndarray, silence_frames: int = 5) -> list[Packet]:
    """48 kHz mono PCM16 -> the packets Discord would send: non-silent frames only, and up to
    ``silence_frames`` opus silence frames after each run of sound."""
    encoder = OpusEncoder()
    out: list[Packet] = []
    trailing = silence_frames
    for i, frame in enumerate(frames_of(to_stereo(pcm48), STEREO_FRAME)):
        if frame.any():
            out.append(Packet(i, encoder.encode(frame)))
            trailing = 0
        elif trailing < silence_frames:
            out.append(Packet(i, SILENCE_FRAME))
            trailing += 1
    return out


def line_packets(record: dict) -> list[Packet]:
    pcm, rate = read_wav(CORPUS / record["file"])
    assert rate == 48_000 and pcm.ndim == 1
    return discord_packets(pcm)


class Feed:
    """Builds one session's ``audio.in`` input: frames per speaker, in capture order."""

    def __init__(self) -> None:
        self.frames: list[AudioFrame] = []
        self._seq: dict[str, int] = {}

    def add(self, speaker: str, packets: Iterable[Packet], at_ns: int) -> None:
        for p in packets:
            seq = self._seq.get(speaker, 0)
            self._seq[speaker] = seq + 1
            self.frames.append(AudioFrame(speaker, seq, at_ns + p.index * FRAME_NS, 0, p.data))

    def ordered(self) -> list[AudioFrame]:
        """Frames in capture order with stream sequences 1, 2, ... as JetStream would assign."""
        frames = sorted(self.frames, key=lambda f: f.capture_ns)
        return [AudioFrame(f.speaker, f.seq, f.capture_ns, i + 1, f.packet)
                for i, f in enumerate(frames)]


class FakeClock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def run(vad: SessionVad, frames: Iterable[AudioFrame], clock: FakeClock | None = None,
        finish: bool = True) -> list[Output | Rejection]:
    """Push frames (the fake monotonic clock follows capture time, as it would live), then
    let the idle timer end what is open."""
    out: list[Output | Rejection] = []
    first: int | None = None
    for frame in frames:
        if clock is not None:
            first = frame.capture_ns if first is None else first
            clock.ns = max(clock.ns, frame.capture_ns - first)
            out += vad.tick()
        out += vad.push(frame)
    if clock is not None:
        clock.ns += 5_000_000_000
        out += vad.tick()
    if finish:
        out += vad.finish()
    return out


class TurnModel(Protocol):
    def probability(self, pcm: np.ndarray) -> float: ...


def answer(vad: SessionVad, outputs: Iterable[Output | Rejection],
           model: TurnModel | None) -> list[Output | Rejection]:
    """``outputs`` with every ``TurnCheck`` answered at once by ``model`` (the answers'
    outputs follow their question), as the handler does it."""
    out: list[Output | Rejection] = []
    for item in outputs:
        out.append(item)
        if isinstance(item, TurnCheck):
            assert model is not None, "a TurnCheck without a model"
            out += answer(vad, vad.turn_result(item, model.probability(item.pcm)), model)
    return out


def run_live(vad: SessionVad, frames: Iterable[AudioFrame], clock: FakeClock,
             model: TurnModel | None = None, tick_ms: int = 50,
             tail_ms: int = 3_000) -> list[tuple[int, Output | Rejection]]:
    """Like serve_session live: frames as they are captured and a tick every ``tick_ms`` of
    the capture clock (frames stop in silence, so ticks end utterances), each ``TurnCheck``
    answered at once. Returns (capture clock when emitted, output)."""
    frames = list(frames)
    if not frames:
        return []
    base = frames[0].capture_ns
    end = frames[-1].capture_ns + tail_ms * 1_000_000
    tick_ns = tick_ms * 1_000_000
    out: list[tuple[int, Output | Rejection]] = []
    next_tick = base + tick_ns
    for frame in [*frames, None]:
        until = end if frame is None else frame.capture_ns
        while next_tick <= until:
            clock.ns = next_tick - base
            out += [(next_tick, o) for o in answer(vad, vad.tick(), model)]
            next_tick += tick_ns
        if frame is not None:
            clock.ns = max(clock.ns, frame.capture_ns - base)
            at = frame.capture_ns + FRAME_NS  # the frame is whole once it is captured
            out += [(at, o) for o in answer(vad, vad.push(frame), model)]
    out += [(end, o) for o in answer(vad, vad.finish(), model)]
    return out


@dataclass(frozen=True)
class Utterance:
    id: str
    speaker: str
    start_ns: int
    speech_end_ns: int
    reason: str
    audio: bytes
    chunks: int
    audio_ms: int


def utterances(outputs: Iterable[Output | Rejection]) -> list[Utterance]:
    """Assemble outputs into utterances, checking the start/audio/end protocol on the way."""
    started: dict[str, UtteranceStart] = {}
    audio: dict[str, list[UtteranceAudio]] = {}
    done: list[Utterance] = []
    for out in outputs:
        if isinstance(out, UtteranceStart):
            assert out.utterance_id not in started, f"started twice: {out.utterance_id}"
            started[out.utterance_id] = out
            audio[out.utterance_id] = []
        elif isinstance(out, UtteranceAudio):
            chunks = audio[out.utterance_id]
            assert out.index == len(chunks), "audio chunks out of order"
            chunks.append(out)
        elif isinstance(out, UtteranceEnd):
            start = started.pop(out.utterance_id)
            chunks = audio.pop(out.utterance_id)
            assert out.chunks == len(chunks) and out.start_ns == start.start_ns
            pcm = b"".join(c.pcm for c in chunks)
            assert out.audio_ms == len(pcm) // 2 * 1000 // 16_000
            done.append(Utterance(out.utterance_id, out.speaker, out.start_ns, out.speech_end_ns,
                                  out.reason, pcm, out.chunks, out.audio_ms))
    assert not started, f"utterances never ended: {list(started)}"
    return done


class EnergyStream(VadStream):
    """A fake engine: speech when a 20 ms chunk's RMS is above a level. Deterministic and
    instant, for testing segmentation logic without a model."""

    engine = "fake"
    chunk_samples = 320

    def __init__(self, level: float = 500.0) -> None:
        self.level = level
        self.resets = 0

    def _probability_impl(self, chunk: np.ndarray) -> float:
        rms = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)))
        return 1.0 if rms >= self.level else 0.0

    def reset(self) -> None:
        self.resets += 1


class EnergyEngine(VadEngine):
    name = "fake"

    def __init__(self, level: float = 500.0) -> None:
        self.level = level
        self.streams: list[EnergyStream] = []

    def stream(self) -> VadStream:
        s = EnergyStream(self.level)
        self.streams.append(s)
        return s


def tone(ms: int, freq: float = 220.0, amplitude: int = 8000, rate: int = 48_000) -> np.ndarray:
    """A harmonic-rich voiced-like tone (mono PCM16)."""
    t = np.arange(rate * ms // 1000) / rate
    x = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 12))
    env = 0.7 + 0.3 * np.sin(2 * np.pi * 4 * t)
    x = x * env / np.max(np.abs(x))
    return (x * amplitude).astype(np.int16)


def silence(ms: int, rate: int = 48_000) -> np.ndarray:
    return np.zeros(rate * ms // 1000, dtype=np.int16)


def iter_bursts(pattern: Iterable[tuple[str, int]]) -> Iterator[np.ndarray]:
    for kind, ms in pattern:
        yield tone(ms) if kind == "tone" else silence(ms)


def track(pattern: Iterable[tuple[str, int]]) -> np.ndarray:
    """("tone", 800), ("silence", 300), ... -> one 48 kHz mono track."""
    return np.concatenate(list(iter_bursts(pattern)))


def default_config(**changes: object) -> SegmenterConfig:
    return SegmenterConfig(**changes)  # type: ignore[arg-type]
