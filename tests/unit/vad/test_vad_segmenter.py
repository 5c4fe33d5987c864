"""Segmentation logic on self-made audio with an instant fake engine (no model, no corpus)."""

from __future__ import annotations

import numpy as np
import pytest

from glyphoxa_audio.opus import SILENCE_FRAME
from glyphoxa_vad.core import AudioFrame, Rejection, SessionVad
from glyphoxa_vad.segmenter import (
    SpeechBargeIn,
    UtteranceAudio,
    UtteranceEnd,
    UtterancePause,
    UtteranceStart,
)
from tests.unit.vad.vad_feed import (
    BASE_NS,
    FRAME_NS,
    EnergyEngine,
    FakeClock,
    Feed,
    default_config,
    discord_packets,
    run,
    track,
    utterances,
)

pytestmark = pytest.mark.unit

MS = 1_000_000


def session(clock: FakeClock | None = None, **config: object) -> SessionVad:
    kwargs = {"monotonic_ns": clock} if clock is not None else {}
    return SessionVad(default_config(**config), EnergyEngine(), **kwargs)  # type: ignore[arg-type]


def frames(*pattern: tuple[str, int], speaker: str = "alex", at_ns: int = BASE_NS) -> list[AudioFrame]:
    """Discord-style frames of a pattern, with its trailing silence (and 5 silence frames)."""
    feed = Feed()
    feed.add(speaker, discord_packets(track([*pattern, ("silence", 300)])), at_ns)
    return feed.ordered()


def test_one_burst_is_one_utterance_with_speech_end_at_the_burst_end() -> None:
    (utt,) = utterances(run(session(), frames(("tone", 1000))))
    assert utt.id == "alex-0"
    assert utt.start_ns == BASE_NS
    assert abs(utt.speech_end_ns - (BASE_NS + 1000 * MS)) <= 20 * MS
    assert utt.reason == "stopped"
    # the burst plus Discord's five silence frames
    assert utt.audio_ms == 1100 and len(utt.audio) == 1100 * 32


def test_preroll_starts_the_utterance_about_200_ms_before_the_speech() -> None:
    noise = np.random.default_rng(7).normal(0, 30, 48 * 400).astype(np.int16)  # sent, not speech
    feed = Feed()
    speech = track([("tone", 800), ("silence", 200)])
    feed.add("alex", discord_packets(np.concatenate([noise, speech])), BASE_NS)
    (utt,) = utterances(run(session(), feed.ordered()))
    assert utt.id == "alex-10"  # 400 ms of noise = 20 frames; 200 ms of pre-roll = 10 frames
    assert utt.start_ns == BASE_NS + 10 * FRAME_NS


def test_a_short_capture_gap_is_silence_inside_the_utterance() -> None:
    (utt,) = utterances(run(session(), frames(("tone", 600), ("silence", 300), ("tone", 600))))
    # Discord sends 5 silence frames after the first burst, then nothing for 200 ms; the gap
    # is filled with silence so the audio keeps the capture timeline
    assert utt.audio_ms == 600 + 300 + 600 + 100
    assert abs(utt.speech_end_ns - (BASE_NS + 1500 * MS)) <= 20 * MS


def test_a_long_capture_gap_ends_the_utterance_at_the_speech_end() -> None:
    first, second = utterances(run(session(), frames(("tone", 600), ("silence", 900), ("tone", 600))))
    assert first.reason == "gap"
    assert abs(first.speech_end_ns - (BASE_NS + 600 * MS)) <= 20 * MS
    assert first.audio_ms == 700  # nothing of the gap is published
    assert second.id == "alex-35"  # 30 tone frames + 5 silence frames before it
    assert second.start_ns == BASE_NS + 1500 * MS


def test_min_silence_is_configurable() -> None:
    pattern = (("tone", 600), ("silence", 400), ("tone", 600))
    assert len(utterances(run(session(), frames(*pattern)))) == 1
    assert len(utterances(run(session(min_silence_ms=300), frames(*pattern)))) == 2


def test_silence_frames_count_as_silence_without_a_gap() -> None:
    # a hot mic: continuous frames, 600 ms of them digital silence sent as opus silence frames
    feed = Feed()
    packets = discord_packets(track([("tone", 600), ("silence", 600), ("tone", 600)]),
                              silence_frames=1000)
    feed.add("alex", packets, BASE_NS)
    first, second = utterances(run(session(), feed.ordered()))
    assert first.reason == "silence"
    assert abs(first.speech_end_ns - (BASE_NS + 600 * MS)) <= 20 * MS
    assert second.start_ns < BASE_NS + 1200 * MS  # pre-roll reaches into the silence frames


def test_a_blip_shorter_than_min_speech_is_not_an_utterance() -> None:
    vad = session()
    out = run(vad, frames(("tone", 100), ("silence", 1000), ("tone", 140)))
    assert utterances(out) == []
    assert vad.retain_from() is None


def test_max_length_forces_an_end_and_a_new_utterance_follows() -> None:
    vad = session(max_utterance_ms=1000)
    utts = utterances(run(vad, frames(("tone", 3500))))
    assert len(utts) >= 3
    assert utts[0].reason == "max_length"
    assert all(u.audio_ms <= 1020 for u in utts)
    assert len({u.id for u in utts}) == len(utts)
    seg = vad._speakers["alex"].segmenter
    assert len(seg._pieces) < 80


def test_audio_is_published_in_chunks_as_the_utterance_goes() -> None:
    vad = session(chunk_ms=160)
    outputs = []
    for frame in frames(("tone", 1000)):
        outputs.append([type(o) for o in vad.push(frame)])
    # audio flows long before the end: the first chunks come with the start
    first_start = next(i for i, o in enumerate(outputs) if UtteranceStart in o)
    assert UtteranceAudio in outputs[first_start]
    assert sum(o.count(UtteranceAudio) for o in outputs) >= 5
    ended = vad.finish()
    audio = [o for o in ended if isinstance(o, UtteranceAudio)]
    assert isinstance(ended[-1], UtteranceEnd) and len(audio) == 1
    assert len(audio[0].pcm) <= 160 * 32


def test_every_chunk_but_the_last_has_the_configured_size() -> None:
    (utt,) = utterances(run(session(chunk_ms=100), frames(("tone", 1230))))
    assert utt.chunks == -(-utt.audio_ms // 100)


@pytest.mark.parametrize(("ms", "expected"), [(500, 0), (900, 1)])
def test_bargein_once_speech_lasted_the_bargein_time(ms: int, expected: int) -> None:
    out = run(session(bargein_ms=600), frames(("tone", ms)))
    bargeins = [o for o in out if isinstance(o, SpeechBargeIn)]
    assert len(bargeins) == expected
    if bargeins:
        (utt,) = utterances(out)
        assert bargeins[0].utterance_id == utt.id
        assert bargeins[0].at_ns - BASE_NS >= 600 * MS


def test_idle_timer_ends_the_utterance_after_min_silence_of_wall_time() -> None:
    clock = FakeClock()
    vad = session(clock)
    for f in frames(("tone", 600)):
        clock.ns = f.capture_ns - BASE_NS
        vad.push(f)
    last = 700 * MS - FRAME_NS  # capture offset of the last (silence) frame
    speech_end = 600 * MS
    clock.ns = last + 50 * MS
    assert vad.tick() == []
    clock.ns = speech_end + 480 * MS
    assert vad.tick() == []
    clock.ns = speech_end + 520 * MS
    (*_, end) = vad.tick()
    assert isinstance(end, UtteranceEnd) and end.utterance_id == "alex-0"
    assert vad.retain_from() is None
    assert vad.tick() == []


def test_the_model_is_reset_for_every_talk_spurt() -> None:
    engine = EnergyEngine()
    vad = SessionVad(default_config(), engine)
    run(vad, frames(("tone", 400), ("silence", 1000), ("tone", 400), ("silence", 1000),
                    ("tone", 400)))
    assert engine.streams[0].resets == 3


def test_retain_from_is_the_first_frame_of_the_open_spurt() -> None:
    vad = session()
    fs = frames(("tone", 400), ("silence", 1000), ("tone", 400))
    seen = []
    for f in fs:
        vad.push(f)
        seen.append(vad.retain_from())
    second_spurt = fs[25]  # 20 tone + 5 silence frames before it
    assert seen[:25] == [1] * 25
    assert seen[-1] == second_spurt.stream_seq
    vad.finish()
    assert vad.retain_from() is None


def test_retain_from_covers_a_finished_spurt_that_straddles_another_open_one() -> None:
    vad = session()
    def mk(spk, seq, at, sseq, data):  # type: ignore[no-untyped-def]
        return AudioFrame(spk, seq, BASE_NS + at * MS, sseq, data)
    tone_packets = discord_packets(track([("tone", 400)]))
    vad.push(mk("sam", 0, 0, 1, tone_packets[0].data))      # sam's spurt starts at 1
    vad.push(mk("alex", 0, 10, 2, tone_packets[0].data))    # alex's spurt starts at 2
    vad.push(mk("sam", 1, 20, 3, tone_packets[1].data))     # sam's last frame
    vad.push(mk("sam", 2, 2000, 4, tone_packets[2].data))   # a new spurt of sam's, old one over
    # replaying from 2 would feed sam's frame 3 without its spurt's start: keep 1
    assert vad.retain_from() == 1


def test_bad_packets_are_rejected_and_the_session_goes_on() -> None:
    vad = session()
    fs = frames(("tone", 800))
    at = fs[19].capture_ns + 10 * MS  # in the middle of the burst
    bad = [
        (AudioFrame("alex", 20, at, 999, b"\x03"), "corrupt_opus"),
        (AudioFrame("alex", 20, at, 1000, b""), "corrupt_opus"),
        (AudioFrame("alex", 20, at, 1001, b"\xfc" * 4000), "oversized"),
        (AudioFrame("alex", 3, at, 1002, SILENCE_FRAME), "out_of_order"),
        (AudioFrame("alex", 1020, at, 1003, SILENCE_FRAME), "implausible_seq"),
    ]
    out = run(vad, fs[:20], finish=False)
    for frame, reason in bad:
        (rejection,) = result = vad.push(frame)
        assert isinstance(rejection, Rejection) and rejection.reason == reason, result
    late = [AudioFrame(f.speaker, f.seq, f.capture_ns, f.stream_seq + 2000, f.packet)
            for f in fs[20:]]
    out += run(vad, late)
    (utt,) = utterances(out)
    assert utt.audio_ms == 900


def test_speakers_are_bounded() -> None:
    vad = SessionVad(default_config(), EnergyEngine(), max_speakers=2)
    packet = discord_packets(track([("tone", 100)]))[0].data
    for i, name in enumerate(["a", "b"]):
        assert vad.push(AudioFrame(name, 0, BASE_NS, i + 1, packet)) == []
    (rejection,) = vad.push(AudioFrame("c", 0, BASE_NS, 3, packet))
    assert isinstance(rejection, Rejection) and rejection.reason == "too_many_speakers"
    vad.finish()  # both spurts over: an idle speaker makes room
    assert vad.push(AudioFrame("c", 0, BASE_NS, 4, packet)) == []


def test_a_pause_is_said_once_with_the_audio_the_end_then_sends() -> None:
    clock = FakeClock()
    vad = session(clock, pause_ms=200, chunk_ms=160)
    sent = []
    for f in frames(("tone", 610)):
        clock.ns = f.capture_ns - BASE_NS
        sent += vad.push(f)
    speech_end = 610 * MS
    clock.ns = speech_end + 150 * MS
    assert vad.tick() == []  # not yet
    clock.ns = speech_end + 210 * MS
    (pause,) = vad.tick()
    assert isinstance(pause, UtterancePause) and pause.utterance_id == "alex-0"
    chunks = [o for o in sent if isinstance(o, UtteranceAudio)]
    assert pause.chunks == len(chunks) and 0 < len(pause.tail) < 160 * 32
    assert abs(pause.speech_end_ns - (BASE_NS + speech_end)) <= 20 * MS
    clock.ns = speech_end + 300 * MS
    assert vad.tick() == []  # said once per silence
    clock.ns = speech_end + 520 * MS
    *audio, end = vad.tick()
    assert isinstance(end, UtteranceEnd) and end.chunks == pause.chunks + 1
    assert [a.pcm for a in audio] == [pause.tail]  # the end's last chunk is the tail


def test_speech_after_a_pause_leaves_the_chunks_as_without_it() -> None:
    """A pause changes no chunk: a replay that sees none publishes the same audio."""
    pattern = (("tone", 500), ("silence", 300), ("tone", 700))

    def chunks_of(pause_ms: int | None) -> tuple[list[bytes], int]:
        clock = FakeClock()
        vad = session(clock, pause_ms=pause_ms, min_silence_ms=500)
        feed = Feed()
        feed.add("alex", discord_packets(track([*pattern, ("silence", 300)])), BASE_NS)
        out, previous = [], None
        for f in feed.ordered():
            if previous is not None and f.capture_ns - previous > 100 * MS:  # Discord's quiet gap
                clock.ns = previous - BASE_NS + 260 * MS
                out += vad.tick()
            clock.ns = f.capture_ns - BASE_NS
            out += vad.push(f)
            previous = f.capture_ns
        out += vad.finish()
        pauses = sum(isinstance(o, UtterancePause) for o in out)
        return [o.pcm for o in out if isinstance(o, UtteranceAudio)], pauses

    with_pause, pauses = chunks_of(200)
    without, none = chunks_of(None)
    assert pauses == 1 and none == 0
    assert with_pause == without
