"""End of turn with a model (``turn_silence_ms``): when the question is asked, what each answer
does, and that the event loop is not the model's. Instant fake engine and scripted answers
here; the real model is in test_vad_smart_turn.py and the corpus benchmark."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from glyphoxa_bus.session import SessionContext
from glyphoxa_events.models import UtteranceEnded, parse_vad
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_vad import metrics
from glyphoxa_vad.config import Settings
from glyphoxa_vad.core import AudioFrame, SessionVad
from glyphoxa_vad.handler import VadSessionHandler
from glyphoxa_vad.segmenter import TurnCheck, UtteranceEnd
from tests.unit.vad.test_vad_handler import FakePublisher, audio_in
from tests.unit.vad.vad_feed import (
    BASE_NS,
    STEREO_FRAME,
    EnergyEngine,
    FakeClock,
    Feed,
    Packet,
    default_config,
    discord_packets,
    run_live,
    track,
    utterances,
)

pytestmark = pytest.mark.unit

MS = 1_000_000
TURN = {"turn_silence_ms": 200, "turn_max_silence_ms": 1200, "turn_recheck_ms": 300}


class Scripted:
    """Answers from a list (the last one repeats), recording every question."""

    def __init__(self, *answers: float) -> None:
        self.answers = list(answers)
        self.asked: list[np.ndarray] = []

    def probability(self, pcm: np.ndarray) -> float:
        self.asked.append(pcm)
        return self.answers[min(len(self.asked) - 1, len(self.answers) - 1)]


def continuous(*pattern: tuple[str, int]) -> list[AudioFrame]:
    """Every 20 ms frame sent, silence included (an edge that does not stop in silence)."""
    from glyphoxa_audio.opus import OpusEncoder, frames_of
    from glyphoxa_audio.wav import to_stereo

    encoder = OpusEncoder()
    packets = [Packet(i, encoder.encode(f))
               for i, f in enumerate(frames_of(to_stereo(track(pattern)), STEREO_FRAME))]
    feed = Feed()
    feed.add("alex", packets, BASE_NS)
    return feed.ordered()


def discord(*pattern: tuple[str, int]) -> list[AudioFrame]:
    feed = Feed()
    feed.add("alex", discord_packets(track(pattern)), BASE_NS)
    return feed.ordered()


def ends(out: list) -> list[tuple[int, UtteranceEnd]]:
    return [(at, o) for at, o in out if isinstance(o, UtteranceEnd)]


def live(frames: list[AudioFrame], model: Scripted | None, **config: object) -> list:
    clock = FakeClock()
    vad = SessionVad(default_config(**config), EnergyEngine(), monotonic_ns=clock)
    return run_live(vad, frames, clock, model=model)


@pytest.mark.parametrize("frames", [continuous, discord])
def test_a_finished_turn_ends_after_the_short_silence(frames) -> None:  # type: ignore[no-untyped-def]
    pattern = (("tone", 900), ("silence", 2000))
    ((fixed_at, fixed),) = ends(live(frames(*pattern), None))
    model = Scripted(0.9)
    ((at, end),) = ends(live(frames(*pattern), model, **TURN))
    assert (fixed.reason, end.reason) == ("idle" if frames is discord else "silence", "turn")
    assert 480 * MS <= fixed_at - fixed.speech_end_ns <= 560 * MS
    assert 180 * MS <= at - end.speech_end_ns <= 260 * MS
    assert end.speech_end_ns == fixed.speech_end_ns
    (asked,) = model.asked  # the utterance's audio so far, its silence included
    assert len(asked) / 16 >= 900 + 180


@pytest.mark.parametrize("frames", [continuous, discord])
def test_an_unfinished_turn_is_asked_again_and_ends_at_the_long_silence(frames) -> None:  # type: ignore[no-untyped-def]
    model = Scripted(0.1)
    ((at, end),) = ends(live(frames(("tone", 900), ("silence", 3000)), model, **TURN))
    assert end.reason in ("silence", "idle")
    assert 1180 * MS <= at - end.speech_end_ns <= 1260 * MS
    assert len(model.asked) == 4  # at 200, 500, 800 and 1100 ms of silence
    lengths = [len(a) for a in model.asked]
    assert all(b - a == pytest.approx(300 * 16, abs=60 * 16) for a, b in zip(lengths, lengths[1:]))


@pytest.mark.parametrize("frames", [continuous, discord])
def test_a_later_yes_ends_the_turn_at_that_check(frames) -> None:  # type: ignore[no-untyped-def]
    model = Scripted(0.2, 0.8)
    ((at, end),) = ends(live(frames(("tone", 900), ("silence", 3000)), model, **TURN))
    assert end.reason == "turn" and len(model.asked) == 2
    assert 480 * MS <= at - end.speech_end_ns <= 560 * MS


def test_speech_resuming_after_a_no_keeps_one_utterance_and_asks_afresh() -> None:
    model = Scripted(0.1, 0.1, 0.9)
    out = live(discord(("tone", 800), ("silence", 450), ("tone", 700), ("silence", 2000)),
               model, **TURN)
    (utt,) = utterances(o for _, o in out)
    assert utt.reason == "turn"
    # asked in the pause (no), then after the line at ~200 ms (no) and ~500 ms (yes); the
    # pause (450 ms) never reached the second question at 500 ms
    checks = [o for _, o in out if isinstance(o, TurnCheck)]
    assert len(model.asked) == 3 and [c.number for c in checks] == [1, 2, 3]
    assert 200 <= checks[0].silence_ms <= 260 and 500 <= checks[2].silence_ms <= 560
    assert abs(utt.speech_end_ns - (BASE_NS + 1950 * MS)) <= 40 * MS


def test_a_yes_in_a_pause_splits_the_line() -> None:
    """What a false cut-off is: the model's answer is final."""
    out = live(discord(("tone", 800), ("silence", 450), ("tone", 700), ("silence", 2000)),
               Scripted(0.9), **TURN)
    assert [u.reason for u in utterances(o for _, o in out)] == ["turn", "turn"]


def test_the_question_reads_at_most_the_last_8_seconds() -> None:
    model = Scripted(0.9)
    live(continuous(("tone", 10_000), ("silence", 1000)), model, max_utterance_ms=20_000, **TURN)
    (asked,) = model.asked
    assert len(asked) == 8 * 16_000
    assert np.abs(asked[-200 * 16 + 400:]).max() == 0  # it ends with the silence


def test_input_waits_for_the_answer_and_a_stale_answer_changes_nothing() -> None:
    clock = FakeClock()
    vad = SessionVad(default_config(**TURN), EnergyEngine(), monotonic_ns=clock)
    checks = []
    for frame in continuous(("tone", 600), ("silence", 400)):
        clock.ns = frame.capture_ns - BASE_NS
        checks += [o for o in vad.push(frame) if isinstance(o, TurnCheck)]
    (check,) = checks  # asked once; the later frames queue behind the question
    assert check.silence_ms == 200
    assert vad.tick() == []  # the idle timer does not run past an open question
    stale_before = metrics.TURN_CHECKS.labels(result="stale")._value.get()
    ended = vad.finish()
    assert [o.reason for o in ended if isinstance(o, UtteranceEnd)] == ["stopped"]
    assert vad.turn_result(check, 0.99) == []
    assert metrics.TURN_CHECKS.labels(result="stale")._value.get() == stale_before + 1


def test_replaying_the_same_frames_gives_the_same_utterances() -> None:
    frames = discord(("tone", 800), ("silence", 300), ("tone", 900), ("silence", 1500))
    runs = []
    for _ in range(2):
        model = Scripted(0.1, 0.9)
        runs.append([(u.id, u.reason, u.speech_end_ns, u.audio)
                     for u in utterances(o for _, o in live(frames, model, **TURN))])
    assert runs[0] == runs[1] and len(runs[0]) == 1


# --- the handler and the settings ---------------------------------------------------------------


class ThreadedModel:
    """The handler's side of SmartTurn: answers in a worker thread, remembering which."""

    def __init__(self, answer: float) -> None:
        self.answer, self.threads = answer, []

    async def probability_async(self, pcm: np.ndarray) -> float:
        def run() -> float:
            self.threads.append(threading.current_thread())
            return self.answer

        return await asyncio.to_thread(run)


async def test_the_handler_asks_off_the_loop_and_publishes_the_end() -> None:
    publisher = FakePublisher()
    ctx = SessionContext("vad", SessionSubjects("t1", "s1"), nc=None, publisher=publisher,  # type: ignore[arg-type]
                         metrics_rejected=Counter("r", "r", ["stage", "reason"],
                                                  registry=CollectorRegistry()))
    clock = FakeClock()
    model = ThreadedModel(0.95)
    handler = VadSessionHandler(
        ctx, SessionVad(default_config(**TURN), EnergyEngine(), monotonic_ns=clock), model)  # type: ignore[arg-type]
    finished = metrics.TURN_CHECKS.labels(result="finished")._value.get()
    packets = discord_packets(track([("tone", 900)]))
    for i, p in enumerate(packets):
        clock.ns = i * 20 * MS
        await handler.on_message(audio_in(i, p.data))
        await handler.on_tick()
    for _ in range(10):  # ticks every 50 ms of silence
        clock.ns += 50 * MS
        await handler.on_tick()
    assert model.threads and threading.main_thread() not in model.threads
    (end,) = [m for m in publisher.sent if m[2] == "vad:t1.s1:alex-0:end"]
    event = parse_vad(end[1])
    assert isinstance(event, UtteranceEnded)
    assert metrics.TURN_CHECKS.labels(result="finished")._value.get() == finished + 1


def test_a_turn_config_needs_the_model() -> None:
    ctx = SessionContext("vad", SessionSubjects("t1", "s1"), nc=None, publisher=FakePublisher(),  # type: ignore[arg-type]
                         metrics_rejected=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Smart Turn"):
        VadSessionHandler(ctx, SessionVad(default_config(**TURN), EnergyEngine()))


def test_smart_turn_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().segmenter_config().turn_silence_ms is None  # off by default
    monkeypatch.setenv("VAD_SMART_TURN", "true")
    monkeypatch.setenv("VAD_SMART_TURN_SILENCE_MS", "250")
    monkeypatch.setenv("VAD_SMART_TURN_MAX_SILENCE_MS", "1000")
    monkeypatch.setenv("VAD_SMART_TURN_THRESHOLD", "0.8")
    config = Settings().segmenter_config()
    assert (config.turn_silence_ms, config.turn_max_silence_ms, config.turn_threshold) == (
        250, 1000, 0.8)
    assert config.end_silence_ms == 1000
    monkeypatch.setenv("VAD_SMART_TURN_SILENCE_MS", "1000")
    with pytest.raises(ValidationError, match="below"):
        Settings()
