"""The vad service as a process against a real nats-server, through its real entry point:
claims, Discord-style opus in, utterance start/audio/end and barge-in out, rejections,
session stop (claim acked) and failover (a second replica replays and publishes the same
utterance)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from glyphoxa_audio.opus import SILENCE_FRAME, OpusEncoder, frames_of
from glyphoxa_audio.wav import read_wav, to_stereo
from glyphoxa_bus.claims import publish_claims
from glyphoxa_bus.session import input_consumer_name
from glyphoxa_bus.streams import MEDIA, WORK
from glyphoxa_campaign import Campaign, Npc
from glyphoxa_cli.processes import ServiceProcess
from glyphoxa_events import headers as H
from glyphoxa_events.models import (
    BargeIn,
    SessionStarted,
    SessionStopped,
    UtteranceEnded,
    UtteranceStarted,
    parse_as,
)
from glyphoxa_events.subjects import SessionSubjects, claim_subject
from tests.support.service import lists_the_session, metric, wait_for

pytestmark = pytest.mark.integration

SESSION = "s1"
SPEAKER = "alex"
FRAME_NS = 20_000_000
CORPUS = Path("/work/shared/corpus")
LINE = CORPUS / "lines" / "line_03.wav"  # 3.5 s with pauses between phrases
needs_corpus = pytest.mark.skipif(
    not LINE.is_file(), reason=f"the shared speech corpus is not at {CORPUS}")


def start_vad(nats_url: str, log_path: Path, **env: str) -> ServiceProcess:
    # a short drain bound only keeps the test quick: the process's NATS drain on SIGTERM
    # otherwise waits its full timeout (see the report on glyphoxa_runtime.run_service)
    return ServiceProcess("vad", env={"NATS_URL": nats_url, "NATS_CLAIM_LEASE_S": "2",
                                      "NATS_DRAIN_TIMEOUT_S": "1", **env},
                          log_path=log_path).start()


@pytest.fixture
def subjects(tenant: str) -> SessionSubjects:
    return SessionSubjects(tenant, SESSION)


def discord_packets(pcm48: np.ndarray) -> list[tuple[int, bytes]]:
    """(frame index, opus packet): only frames with sound, then five opus silence frames."""
    encoder, out, trailing = OpusEncoder(), [], 5
    for i, frame in enumerate(frames_of(to_stereo(pcm48), 960)):
        if frame.any():
            out.append((i, encoder.encode(frame)))
            trailing = 0
        elif trailing < 5:
            out.append((i, SILENCE_FRAME))
            trailing += 1
    return out


def tone_burst(ms: int, lead_ms: int = 200, tail_ms: int = 300) -> np.ndarray:
    t = np.arange(48 * ms) / 48_000
    x = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 12))
    burst = (x / np.max(np.abs(x)) * 9000).astype(np.int16)
    return np.concatenate([np.zeros(48 * lead_ms, np.int16), burst, np.zeros(48 * tail_ms, np.int16)])


@dataclass
class Edge:
    """Publishes a speaker's opus frames the way discord-edge does (docs/contract.md)."""

    js: object
    subjects: SessionSubjects
    base_ns: int = field(default_factory=time.time_ns)

    async def frame(self, seq: int, index: int, packet: bytes, **override: str) -> None:
        headers = {H.SEQ: str(seq), H.CAPTURE_NS: str(self.base_ns + index * FRAME_NS),
                   H.CODEC: H.CODEC_OPUS,
                   H.MSG_ID: f"ain:{self.subjects.tenant}.{self.subjects.session}:{SPEAKER}:{seq}",
                   **override}
        await self.js.publish(self.subjects.audio_in(SPEAKER), packet, headers=headers)  # type: ignore[attr-defined]


@dataclass
class Seen:
    """Every ``vad.<speaker>`` message stored for the session, in stream order."""

    msgs: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    async def on_msg(self, msg) -> None:  # type: ignore[no-untyped-def]
        self.msgs.append((msg.subject, dict(msg.headers or {}), msg.data))

    def kinds(self) -> list[str]:
        return [h.get(H.KIND, "") for _, h, _ in self.msgs]


async def begin_session(nc, subjects: SessionSubjects) -> None:  # type: ignore[no-untyped-def]
    started = SessionStarted(campaign=Campaign(name="t", npcs=[Npc(name="Greta", persona="x")]),
                             started_ns=time.time_ns())
    await nc.jetstream().publish(subjects.ctl("session.started"), started.to_bytes(), headers={
        H.MSG_ID: f"ctl:{subjects.tenant}.{subjects.session}:session.started:1"})
    await publish_claims(nc, subjects.tenant, subjects.session, ["vad"])


async def stop_session(nc, subjects: SessionSubjects) -> None:  # type: ignore[no-untyped-def]
    stopped = SessionStopped(stopped_ns=time.time_ns())
    await nc.jetstream().publish(subjects.ctl("session.stopped"), stopped.to_bytes(), headers={
        H.MSG_ID: f"ctl:{subjects.tenant}.{subjects.session}:session.stopped:1"})




async def claim_released(js, subjects: SessionSubjects) -> bool:  # type: ignore[no-untyped-def]
    try:
        await js.get_last_msg(WORK, claim_subject("vad", subjects.tenant, subjects.session))
    except NotFoundError:
        return True
    return False


async def input_consumer_gone(js, subjects: SessionSubjects) -> bool:  # type: ignore[no-untyped-def]
    try:
        await js.consumer_info(MEDIA, input_consumer_name("vad", subjects))
    except NotFoundError:
        return True
    return False




def check_utterance(seen: Seen, subjects: SessionSubjects) -> tuple[str, UtteranceEnded, bytes]:
    """One complete utterance with the contract's headers and message ids; returns it."""
    assert seen.kinds()[0] == "start" and seen.kinds()[-1] == "end"
    assert seen.kinds().count("start") == 1 and seen.kinds().count("end") == 1
    msgs = [m for m in seen.msgs if m[1][H.KIND] != "pause"]
    pauses = [m for m in seen.msgs if m[1][H.KIND] == "pause"]
    (_, start_h, start_body), *audio, (_, end_h, end_body) = msgs
    utt = start_h[H.UTTERANCE]
    prefix = f"vad:{subjects.tenant}.{subjects.session}:{utt}"
    assert utt == f"{SPEAKER}-{int(utt.split('-')[1])}"
    assert start_h[H.MSG_ID] == f"{prefix}:start" and end_h[H.MSG_ID] == f"{prefix}:end"
    started = parse_as(UtteranceStarted, start_body)
    ended = parse_as(UtteranceEnded, end_body)
    assert started.utterance_id == ended.utterance_id == utt
    for n, (subject, hdrs, _) in enumerate(audio):
        assert subject == subjects.vad(SPEAKER)
        assert (hdrs[H.KIND], hdrs[H.UTTERANCE], hdrs[H.SEQ]) == ("audio", utt, str(n))
        assert hdrs[H.MSG_ID] == f"{prefix}:{n}"
    pcm = b"".join(body for _, _, body in audio)
    assert ended.chunks == len(audio) and ended.audio_ms == len(pcm) // 32
    assert ended.start_ns == started.start_ns
    for _, hdrs, tail in pauses:  # the audio so far: its chunks, then the tail (docs/contract.md)
        chunks = int(hdrs[H.SEQ])
        assert hdrs[H.UTTERANCE] == utt and chunks <= len(audio)
        assert hdrs[H.MSG_ID] == f"{prefix}:pause-{chunks}-{len(tail)}"
        if chunks == len(audio) - 1:  # the utterance ended at this pause
            assert audio[-1][2] == tail
    return utt, ended, pcm


@needs_corpus
async def test_vad_service_turns_opus_into_one_utterance(nc, nats_url: str, subjects: SessionSubjects,
                                                        tmp_path: Path) -> None:
    js = nc.jetstream()
    seen, bargeins = Seen(), Seen()
    sub = await js.subscribe(subjects.vad("*"), cb=seen.on_msg, ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    ctl = await js.subscribe(subjects.ctl("bargein"), cb=bargeins.on_msg, ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    service = start_vad(nats_url, tmp_path / "vad.log")
    try:
        service.wait_ready()
        await begin_session(nc, subjects)
        # captured over the last 4 s and published at once (as an edge catching up would)
        edge = Edge(js, subjects, base_ns=time.time_ns() - 4_000_000_000)
        pcm, _ = read_wav(LINE)
        packets = discord_packets(pcm)
        for seq, (index, packet) in enumerate(packets):
            if seq == 40:  # a broken packet and a broken header in the middle of the speech
                broken = f"ain:{subjects.tenant}.{SESSION}:{SPEAKER}:broken"
                await edge.frame(seq, index, b"\x0b\xff\xff", **{H.MSG_ID: broken})
                await edge.frame(10_001, index, b"\xf8\xff\xfe", **{H.SEQ: "soon"})
                # and forged ones: a sequence number far ahead (the speaker's later frames
                # must not look old), a new speaker an hour ahead (the session's clock must
                # not jump and end the utterance)
                await edge.frame(2**62, index, packet)
                hour_ahead = edge.base_ns + index * FRAME_NS + 3600 * 10**9
                await js.publish(subjects.audio_in("mallory"), packet, headers={
                    H.SEQ: str(hour_ahead // FRAME_NS), H.CAPTURE_NS: str(hour_ahead),
                    H.CODEC: H.CODEC_OPUS})
            await edge.frame(seq, index, packet)
        await wait_for(lambda: "end" in seen.kinds())
        await lists_the_session(js, "vad", subjects, service)

        utt, ended, audio = check_utterance(seen, subjects)
        assert utt == f"{SPEAKER}-0"
        labelled_end = edge.base_ns + round(3.78 * 1e9)  # lines.jsonl: speech_end_s of line_03
        assert abs(ended.speech_end_ns - labelled_end) <= 150_000_000
        assert ended.vad_end_ns >= ended.speech_end_ns
        assert len(audio) >= 32 * 3400  # the speech, all of it
        (_, hdrs, body), = bargeins.msgs
        assert hdrs[H.MSG_ID] == f"ctl:{subjects.tenant}.{subjects.session}:bargein:{utt}"
        assert parse_as(BargeIn, body).speaker == SPEAKER

        port = service.metrics_port
        assert metric(port, "glyphoxa_vad_rejected_messages_total", reason="corrupt_opus") == 1
        assert metric(port, "glyphoxa_vad_rejected_messages_total", reason="bad_header") == 1
        assert metric(port, "glyphoxa_vad_rejected_messages_total", reason="implausible_seq") == 1
        assert metric(port, "glyphoxa_vad_rejected_messages_total",
                      reason="implausible_capture") == 1
        assert metric(port, "glyphoxa_vad_utterances_total", engine="silero") == 1
        assert metric(port, "glyphoxa_vad_frames_total") == len(packets)
        assert metric(port, "glyphoxa_vad_end_decision_seconds_count") == 1

        await stop_session(nc, subjects)
        await wait_for(lambda: claim_released(js, subjects))
        await wait_for(lambda: input_consumer_gone(js, subjects))
    finally:
        service.stop()
        await sub.unsubscribe()
        await ctl.unsubscribe()
    log = [json.loads(line) for line in (tmp_path / "vad.log").read_text().splitlines()
           if line.startswith("{")]
    rejected = [r for r in log if r["msg"].startswith("rejected message")]
    assert {r["reason"] for r in rejected} == {"corrupt_opus", "bad_header", "implausible_seq",
                                               "implausible_capture"}
    assert all(r["tenant"] == subjects.tenant and r["session"] == SESSION for r in rejected)
    assert any(r["msg"] == "utterance ended" and r["utterance"] == utt for r in log)


async def test_a_replica_taking_over_publishes_the_same_utterance(
        nc, nats_url: str, subjects: SessionSubjects, tmp_path: Path) -> None:
    """Kill -9 the first replica mid-utterance; the second replays from the ack floor.
    Runs on self-made audio with the light engine, so it needs no corpus."""
    js = nc.jetstream()
    seen = Seen()
    published: dict[str, list[bytes]] = {}  # every publish, duplicates included (core NATS)

    async def on_core(msg) -> None:  # type: ignore[no-untyped-def]
        published.setdefault((msg.headers or {}).get(H.MSG_ID, ""), []).append(msg.data)

    sub = await js.subscribe(subjects.vad("*"), cb=seen.on_msg, ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    core = await nc.subscribe(subjects.vad("*"), cb=on_core)
    env = {"VAD_ENGINE": "webrtc"}
    first = start_vad(nats_url, tmp_path / "vad-a.log", **env)
    second: ServiceProcess | None = None
    try:
        first.wait_ready()
        await begin_session(nc, subjects)
        edge = Edge(js, subjects)
        packets = discord_packets(tone_burst(3000))
        t0 = time.monotonic()
        for seq, (index, packet) in enumerate(packets):
            # live pace, so the first replica sees a speaker who is still talking
            await asyncio.sleep(max(0.0, t0 + seq * 0.02 - time.monotonic()))
            await edge.frame(seq, index, packet)
            if seq == 75:
                await wait_for(lambda: seen.kinds().count("audio") >= 3, timeout_s=10)
                first.kill9()
                # takes the claim once the lease runs out, replays, then follows live
                second = start_vad(nats_url, tmp_path / "vad-b.log", **env)
        assert second is not None
        second.wait_ready()
        await wait_for(lambda: "end" in seen.kinds())
        utt, ended, _ = check_utterance(seen, subjects)
        assert abs(ended.speech_end_ns - (edge.base_ns + 3_200_000_000)) <= 100_000_000
        assert 3_000 <= ended.audio_ms <= 3_200
        # the second replica re-published what the first had sent, byte for byte
        replayed = [ids for ids, bodies in published.items() if len(bodies) > 1]
        assert f"vad:{subjects.tenant}.{SESSION}:{utt}:start" in replayed
        for msg_id in replayed:
            assert len(set(published[msg_id])) == 1, msg_id
        await stop_session(nc, subjects)
        await wait_for(lambda: claim_released(js, subjects))
    finally:
        first.stop()
        if second is not None:
            second.stop()
        await sub.unsubscribe()
        await core.unsubscribe()
