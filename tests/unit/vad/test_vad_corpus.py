"""Both engines on recorded (synthetic) speech: /work/shared/corpus, skipped when absent.

Lines are encoded to opus at Discord's format and sent Discord style (only frames with
sound, then five silence frames, then nothing).
"""

from __future__ import annotations

import json
from functools import cache

import pytest

from glyphoxa_audio.wav import read_wav
from glyphoxa_vad.core import AudioFrame, SessionVad
from glyphoxa_vad.engines import VadEngine, build_engine
from tests.unit.vad.vad_feed import (
    BASE_NS,
    CORPUS,
    FRAME_NS,
    FakeClock,
    Feed,
    Packet,
    Utterance,
    corpus_lines,
    default_config,
    discord_packets,
    line_packets,
    requires_corpus,
    run,
    utterances,
)

pytestmark = [pytest.mark.unit, requires_corpus]

MS = 1_000_000
TOLERANCE_NS = 150 * MS
SCENE = CORPUS / "scenes" / "forge_and_tavern"


@cache
def engine(name: str) -> VadEngine:
    return build_engine(name)


@cache
def packets_of_line(index: int) -> list[Packet]:
    return line_packets(corpus_lines()[index])


@cache
def scene() -> tuple[list[AudioFrame], list[dict]]:
    spec = json.loads((SCENE / "scene.json").read_text())
    feed = Feed()
    for player in spec["players"]:
        pcm, rate = read_wav(SCENE / player["track"])
        assert rate == 48_000
        feed.add(player["name"], discord_packets(pcm), BASE_NS)
    return feed.ordered(), spec["turns"]


def lines_session() -> tuple[list[AudioFrame], list[tuple[int, int]]]:
    """Every line, one speaker, 1.5 s apart: frames and the labelled speech (start, end)."""
    feed, at, labels = Feed(), BASE_NS, []
    for i, record in enumerate(corpus_lines()):
        packets = packets_of_line(i)
        feed.add("alex", packets, at)
        labels.append((at + round(record["speech_start_s"] * 1e9),
                       at + round(record["speech_end_s"] * 1e9)))
        at += (packets[-1].index + 1) * FRAME_NS + 1_500_000_000
    return feed.ordered(), labels


@pytest.mark.parametrize("engine_name", ["silero", "webrtc"])
def test_one_utterance_per_line_ending_at_the_labelled_speech_end(engine_name: str) -> None:
    frames, labels = lines_session()
    clock = FakeClock()
    vad = SessionVad(default_config(), engine(engine_name), monotonic_ns=clock)
    utts = utterances(run(vad, frames, clock))
    assert len(utts) == len(labels)
    for utt, (start, end) in zip(utts, labels):
        assert utt.reason == "idle", utt.id
        assert abs(utt.speech_end_ns - end) <= TOLERANCE_NS, (utt.id, (utt.speech_end_ns - end) / MS)
        assert utt.start_ns <= start + TOLERANCE_NS  # pre-roll: the start is not cut
        assert utt.audio_ms >= (end - start) / MS


@pytest.mark.parametrize("engine_name", ["silero", "webrtc"])
def test_scene_with_three_players_and_overlaps(engine_name: str) -> None:
    frames, turns = scene()
    clock = FakeClock()
    utts = utterances(run(SessionVad(default_config(), engine(engine_name), monotonic_ns=clock),
                          frames, clock))
    for player in {t["player"] for t in turns}:
        mine = [u for u in utts if u.speaker == player]
        expected = [t for t in turns if t["player"] == player]
        assert len(mine) == len(expected), player
        for utt, turn in zip(mine, expected):
            end = BASE_NS + round(turn["end_s"] * 1e9)
            assert abs(utt.speech_end_ns - end) <= TOLERANCE_NS, (utt.id, turn["text"])


def replay_matches(frames: list[AudioFrame], engine_name: str, crash_every: int) -> int:
    """Run live-paced, 'crash' after frame k, replay from the acked point on a fresh session
    (as fast as possible, as a replica taking over would) and compare what both publish."""
    clock = FakeClock()
    vad = SessionVad(default_config(), engine(engine_name), monotonic_ns=clock)
    outputs: list = []
    checkpoints: list[tuple[int, int, int | None]] = []  # (frame index, outputs so far, retain)
    for k, frame in enumerate(frames):
        clock.ns = frame.capture_ns - frames[0].capture_ns
        outputs += vad.tick()
        outputs += vad.push(frame)
        checkpoints.append((k, len(outputs), vad.retain_from()))
    clock.ns += 5_000_000_000
    outputs += vad.tick()
    original = {u.id: u for u in utterances(outputs)}
    checked = 0
    for k, published, retain in checkpoints[::crash_every]:
        start_seq = retain if retain is not None else frames[k].stream_seq + 1
        replayed = utterances(run(
            SessionVad(default_config(), engine(engine_name), monotonic_ns=FakeClock()),
            [f for f in frames if f.stream_seq >= start_seq], FakeClock()))
        unfinished = {u.id for u in original.values()} - {
            o.utterance_id for o in outputs[:published] if type(o).__name__ == "UtteranceEnd"}
        assert unfinished <= {u.id for u in replayed}, k
        for utt in replayed:
            assert utt.id in original and same(utt, original[utt.id]), (k, utt.id)
        checked += 1
    return checked


def same(a: Utterance, b: Utterance) -> bool:
    return (a.start_ns, a.speech_end_ns, a.audio, a.chunks) == (b.start_ns, b.speech_end_ns,
                                                                 b.audio, b.chunks)


@pytest.mark.parametrize(("engine_name", "crash_every"), [("webrtc", 41), ("silero", 151)])
def test_replay_from_retain_point_publishes_the_same_utterances(engine_name: str,
                                                                crash_every: int) -> None:
    frames, _ = scene()
    assert replay_matches(frames, engine_name, crash_every) >= 8
