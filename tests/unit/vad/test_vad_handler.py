"""The bus adapter without a bus: subjects, headers and message ids exactly as in
docs/contract.md, rejections counted with bounded reasons, settings from ``VAD_*``."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from glyphoxa_bus.session import InputMessage, SessionContext
from glyphoxa_events import headers as H
from glyphoxa_events.models import BargeIn, UtteranceEnded, UtteranceStarted, parse_as, parse_vad
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_vad.config import Settings
from glyphoxa_vad.core import SessionVad
from glyphoxa_vad.handler import VadSessionHandler
from tests.unit.vad.vad_feed import (
    BASE_NS,
    EnergyEngine,
    FakeClock,
    default_config,
    discord_packets,
    track,
)

pytestmark = pytest.mark.unit


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, str, dict[str, str]]] = []

    async def publish(self, subject: str, data: bytes, msg_id: str,
                      headers: dict[str, str] | None = None) -> None:
        self.sent.append((subject, data, msg_id, dict(headers or {})))

    async def flush(self) -> None:
        pass


@pytest.fixture
def rejected() -> Counter:
    return Counter("test_rejected", "rejections", ["stage", "reason"], registry=CollectorRegistry())


@pytest.fixture
def setup(rejected: Counter) -> tuple[VadSessionHandler, FakePublisher, FakeClock]:
    publisher = FakePublisher()
    ctx = SessionContext("vad", SessionSubjects("t1", "s1"), nc=None, publisher=publisher,  # type: ignore[arg-type]
                         metrics_rejected=rejected)
    clock = FakeClock()
    vad = SessionVad(default_config(), EnergyEngine(), monotonic_ns=clock)
    return VadSessionHandler(ctx, vad), publisher, clock


def audio_in(seq: int, packet: bytes, speaker: str = "alex", stream_seq: int | None = None,
             **headers: str) -> InputMessage:
    hdrs = {H.SEQ: str(seq), H.CAPTURE_NS: str(BASE_NS + seq * 20_000_000), H.CODEC: "opus",
            **headers}
    return InputMessage(f"glx.t1.s1.audio.in.{speaker}", packet, hdrs,
                        stream_seq if stream_seq is not None else seq + 1)


async def feed_burst(handler: VadSessionHandler, clock: FakeClock, ms: int = 900) -> None:
    for i, p in enumerate(discord_packets(track([("tone", ms), ("silence", 300)]))):
        clock.ns = i * 20_000_000
        await handler.on_message(audio_in(i, p.data))
        await handler.on_tick()
    clock.ns += 2_000_000_000
    await handler.on_tick()


async def test_utterance_messages_follow_the_contract(setup) -> None:  # type: ignore[no-untyped-def]
    handler, publisher, clock = setup
    await feed_burst(handler, clock)
    vad_msgs = [m for m in publisher.sent if m[0] == "glx.t1.s1.vad.alex"]
    start, *audio, end = vad_msgs
    assert start[2] == "vad:t1.s1:alex-0:start"
    assert start[3] == {H.KIND: "start", H.UTTERANCE: "alex-0"}
    started = parse_vad(start[1])
    assert isinstance(started, UtteranceStarted) and started.start_ns == BASE_NS
    for n, (_, data, msg_id, hdrs) in enumerate(audio):
        assert msg_id == f"vad:t1.s1:alex-0:{n}"
        assert hdrs == {H.KIND: "audio", H.UTTERANCE: "alex-0", H.SEQ: str(n)}
        assert len(data) % 2 == 0 and len(data) <= 160 * 32
    ended = parse_vad(end[1])
    assert end[2] == "vad:t1.s1:alex-0:end" and end[3] == {H.KIND: "end", H.UTTERANCE: "alex-0"}
    assert isinstance(ended, UtteranceEnded)
    assert ended.chunks == len(audio)
    assert ended.audio_ms == sum(len(a[1]) for a in audio) // 32
    assert abs(ended.speech_end_ns - (BASE_NS + 900_000_000)) <= 20_000_000
    assert ended.vad_end_ns > ended.speech_end_ns  # wall clock now vs a capture time in 2023
    assert handler.retain_from() is None


async def test_bargein_goes_to_the_control_subject_once(setup) -> None:  # type: ignore[no-untyped-def]
    handler, publisher, clock = setup
    await feed_burst(handler, clock, ms=1500)
    (bargein,) = [m for m in publisher.sent if m[0] == "glx.t1.s1.ctl.bargein"]
    assert bargein[2] == "ctl:t1.s1:bargein:alex-0"
    event = parse_as(BargeIn, bargein[1])
    assert event.speaker == "alex" and event.at_ns >= BASE_NS + 600_000_000
    # it comes before the end of the utterance, while the player is still talking
    ids = [m[2] for m in publisher.sent]
    assert ids.index("ctl:t1.s1:bargein:alex-0") < ids.index("vad:t1.s1:alex-0:end")


@pytest.mark.parametrize(("msg", "reason"), [
    (InputMessage("glx.t1.s1.audio.in.alex", b"\x03", {H.SEQ: "0", H.CAPTURE_NS: "1"}, 1),
     "corrupt_opus"),
    (InputMessage("glx.t1.s1.audio.in.alex", b"\xf8" * 5000, {H.SEQ: "0", H.CAPTURE_NS: "1"}, 1),
     "oversized"),
    (InputMessage("glx.t1.s1.audio.in.alex", b"\xf8\xff\xfe", {H.CAPTURE_NS: "1"}, 1), "bad_header"),
    (InputMessage("glx.t1.s1.audio.in.alex", b"\xf8\xff\xfe", {H.SEQ: "x", H.CAPTURE_NS: "1"}, 1),
     "bad_header"),
    (InputMessage("glx.t1.s1.audio.in.alex", b"\xf8\xff\xfe", {H.SEQ: "-1", H.CAPTURE_NS: "1"}, 1),
     "bad_header"),
    (InputMessage("glx.t1.s1.audio.in.alex", b"\xf8\xff\xfe",
                  {H.SEQ: "0", H.CAPTURE_NS: "1", H.CODEC: "pcm16"}, 1), "bad_header"),
    (InputMessage("glx.t1.s1.audio.in.Alex", b"\xf8\xff\xfe", {H.SEQ: "0", H.CAPTURE_NS: "1"}, 1),
     "invalid_token"),
    (InputMessage("glx.t1.s2.audio.in.alex", b"\xf8\xff\xfe", {H.SEQ: "0", H.CAPTURE_NS: "1"}, 1),
     "bad_subject"),
    (InputMessage("glx.t1.s1.audio.out.greta", b"\xf8\xff\xfe", {H.SEQ: "0", H.CAPTURE_NS: "1"}, 1),
     "bad_subject"),
])
async def test_bad_input_is_rejected_logged_and_counted(
        setup, rejected: Counter, msg: InputMessage, reason: str,  # type: ignore[no-untyped-def]
        caplog: pytest.LogCaptureFixture) -> None:
    handler, publisher, _ = setup
    with caplog.at_level(logging.WARNING, logger="glyphoxa.vad"):
        await handler.on_message(msg)
    assert publisher.sent == []
    assert rejected.labels(stage="vad", reason=reason)._value.get() == 1
    (record,) = caplog.records
    assert record.reason == reason and record.tenant == "t1"  # type: ignore[attr-defined]


async def test_a_bad_packet_does_not_stop_the_utterance(setup, rejected: Counter) -> None:  # type: ignore[no-untyped-def]
    handler, publisher, clock = setup
    await handler.on_message(audio_in(0, b"\x0b\xff\xff", stream_seq=10_000))
    await feed_burst(handler, clock)
    assert rejected.labels(stage="vad", reason="corrupt_opus")._value.get() == 1
    assert [m[2] for m in publisher.sent][-1] == "vad:t1.s1:alex-0:end"


async def test_close_ends_an_open_utterance(setup) -> None:  # type: ignore[no-untyped-def]
    handler, publisher, _ = setup
    for i, p in enumerate(discord_packets(track([("tone", 700)]))):
        await handler.on_message(audio_in(i, p.data))
    assert handler.retain_from() == 1
    await handler.close()
    assert publisher.sent[-1][2] == "vad:t1.s1:alex-0:end"
    assert handler.retain_from() is None


def test_settings_come_from_vad_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAD_ENGINE", "webrtc")
    monkeypatch.setenv("VAD_MIN_SILENCE_MS", "700")
    monkeypatch.setenv("VAD_BARGEIN_MS", "900")
    settings = Settings()
    assert settings.engine == "webrtc"
    config = settings.segmenter_config()
    assert (config.min_silence_ms, config.bargein_ms, config.threshold) == (700, 900, 0.5)
    monkeypatch.setenv("VAD_ENGINE", "whisper")
    with pytest.raises(ValidationError):
        Settings()
