"""The stt service as a process against a real nats-server: its real entry point, claims,
vad utterances in, one final transcript per utterance out, rejection, stop and failover."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from glyphoxa_audio.wav import read_wav, resample
from glyphoxa_bus.claims import publish_claims
from glyphoxa_bus.session import input_consumer_name
from glyphoxa_bus.streams import EVENTS, WORK
from glyphoxa_campaign import Campaign, Npc
from glyphoxa_cli.processes import ServiceProcess
from glyphoxa_events import headers as H
from glyphoxa_events.models import (
    SessionStarted,
    SessionStopped,
    Transcript,
    UtteranceEnded,
    UtteranceStarted,
)
from glyphoxa_events.subjects import SessionSubjects, claim_subject
from tests.support.service import UsageLog, heartbeat_of, holds, metric, wait_for

pytestmark = pytest.mark.integration

SESSION = "s1"
CORPUS = Path("/work/shared/corpus")
CAMPAIGN = Campaign(name="Forge and Tavern", npcs=(
    Npc(name="Greta", persona="A gruff dwarven blacksmith."),
    Npc(name="Aldric", persona="Innkeeper of the Prancing Stag."),
    Npc(name="Mirela", persona="A secretive herbalist."),
    Npc(name="Captain Voss", persona="Captain of the city watch."),
))
needs_corpus = pytest.mark.skipif(
    not (CORPUS / "lines").is_dir(), reason=f"the shared speech corpus is not at {CORPUS}")


def start_stt(nats_url: str, log_path: Path, **env: str) -> ServiceProcess:
    return ServiceProcess("stt", env={"NATS_URL": nats_url, "NATS_CLAIM_LEASE_S": "2", **env},
                          log_path=log_path).start()


@pytest.fixture
def stt_service(nats_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    service = start_stt(nats_url, tmp_path / "stt.log")
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


def line16k(name: str) -> np.ndarray:
    pcm, rate = read_wav(CORPUS / "lines" / name)
    return resample(pcm, rate, 16_000)


class Vad:
    """Publishes utterances the way vad does (docs/contract.md)."""

    def __init__(self, js, subjects: SessionSubjects):
        self.js, self.subjects = js, subjects

    async def _publish(self, speaker: str, utt: str, kind: str, data: bytes, tail: str,
                       seq: int | None = None) -> None:
        headers = {H.KIND: kind, H.UTTERANCE: utt,
                   H.MSG_ID: f"vad:{self.subjects.tenant}.{self.subjects.session}:{utt}:{tail}"}
        if seq is not None:
            headers[H.SEQ] = str(seq)
        await self.js.publish(self.subjects.vad(speaker), data, headers=headers)

    async def start(self, speaker: str, utt: str) -> None:
        event = UtteranceStarted(utterance_id=utt, speaker=speaker, start_ns=time.time_ns())
        await self._publish(speaker, utt, "start", event.to_bytes(), "start")

    async def audio(self, speaker: str, utt: str, pcm: np.ndarray, first: int = 0,
                    last: int | None = None) -> None:
        chunks = chunked(pcm)
        for index in range(first, len(chunks) if last is None else last):
            await self._publish(speaker, utt, "audio", chunks[index], str(index), seq=index)

    async def end(self, speaker: str, utt: str, pcm: np.ndarray) -> None:
        now = time.time_ns()
        event = UtteranceEnded(utterance_id=utt, speaker=speaker, start_ns=now - 10**9,
                               speech_end_ns=now, chunks=len(chunked(pcm)),
                               audio_ms=len(pcm) // 16, vad_end_ns=now)
        await self._publish(speaker, utt, "end", event.to_bytes(), "end")

    async def utterance(self, speaker: str, utt: str, pcm: np.ndarray) -> None:
        await self.start(speaker, utt)
        await self.audio(speaker, utt, pcm)
        await self.end(speaker, utt, pcm)


def chunked(pcm: np.ndarray, ms: int = 100) -> list[bytes]:
    step = 16 * ms
    return [pcm[i:i + step].tobytes() for i in range(0, len(pcm), step)]


class Finals:
    """Every transcript stored in the stream for the session (de-duplicated by JetStream)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, Transcript]] = []
        self.sub = None

    async def follow(self, js, subjects: SessionSubjects) -> Finals:
        async def on_msg(msg) -> None:
            self.items.append((msg.subject, (msg.headers or {}).get(H.MSG_ID, ""),
                               Transcript.model_validate_json(msg.data)))

        self.sub = await js.subscribe(subjects.stt("*"), cb=on_msg, ordered_consumer=True,
                                      deliver_policy=DeliverPolicy.ALL)
        return self

    def by_utterance(self) -> dict[str, list[Transcript]]:
        out: dict[str, list[Transcript]] = {}
        for _, _, t in self.items:
            out.setdefault(t.utterance_id, []).append(t)
        return out

    async def close(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()


async def begin_session(nc, subjects: SessionSubjects) -> None:
    js = nc.jetstream()
    started = SessionStarted(campaign=CAMPAIGN, started_ns=time.time_ns())
    await js.publish(subjects.ctl("session.started"), started.to_bytes(), headers={
        H.MSG_ID: f"ctl:{subjects.tenant}.{subjects.session}:session.started:1"})
    await publish_claims(nc, subjects.tenant, subjects.session, ["stt"])


async def stop_session(nc, subjects: SessionSubjects) -> None:
    stopped = SessionStopped(stopped_ns=time.time_ns())
    await nc.jetstream().publish(subjects.ctl("session.stopped"), stopped.to_bytes(), headers={
        H.MSG_ID: f"ctl:{subjects.tenant}.{subjects.session}:session.stopped:1"})




async def _call(predicate) -> bool:
    result = predicate()
    return await result if asyncio.iscoroutine(result) else bool(result)






async def claim_released(js, subjects: SessionSubjects) -> bool:
    try:
        await js.get_last_msg(WORK, claim_subject("stt", subjects.tenant, subjects.session))
    except NotFoundError:
        return True
    return False


async def input_consumer_gone(js, subjects: SessionSubjects) -> bool:
    try:
        await js.consumer_info(EVENTS, input_consumer_name("stt", subjects))
    except NotFoundError:
        return True
    return False


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower().replace("'", ""))


@needs_corpus
async def test_stt_service_transcribes_and_rejects(nc, tenant, stt_service):
    subjects = SessionSubjects(tenant, SESSION)
    js = nc.jetstream()
    vad = Vad(js, subjects)
    finals = await Finals().follow(js, subjects)
    usage = await UsageLog().follow(js, subjects)
    try:
        await begin_session(nc, subjects)
        greta = line16k("line_10.wav")  # "Has anyone strange come through here lately, Aldric?"
        await vad.utterance("alex", "alex-0", greta)
        await wait_for(lambda: len(finals.items) == 1, 60)

        # malformed JSON, then audio of an utterance that never started: both rejected
        await js.publish(subjects.vad("alex"), b'{"type": "utterance.started", "utter',
                         headers={H.KIND: "start", H.UTTERANCE: "alex-1"})
        await js.publish(subjects.vad("sam"), b"\x00\x00" * 160,
                         headers={H.KIND: "audio", H.UTTERANCE: "sam-99", H.SEQ: "0"})
        voss = line16k("line_19.wav")  # "... isn't that right, Captain Voss?"
        await vad.utterance("sam", "sam-5", voss)
        await wait_for(lambda: len(finals.items) == 2, 60)

        (s0, id0, t0), (s1, id1, t1) = finals.items
        assert (s0, id0) == (subjects.stt("alex"), f"stt:{tenant}.{SESSION}:alex-0:final")
        assert (s1, id1) == (subjects.stt("sam"), f"stt:{tenant}.{SESSION}:sam-5:final")
        assert t0.final and t0.provider == "whisper" and t0.speaker == "alex"
        assert "aldric" in words(t0.text), t0.text
        assert {"captain", "voss"} <= set(words(t1.text)), t1.text
        assert t0.audio_seconds == pytest.approx(len(greta) / 16_000, abs=0.01)
        assert t0.speech_end_ns <= t0.vad_end_ns <= t0.stt_final_ns
        await wait_for(lambda: len(usage.items) == 2, 10)
        seconds = usage.of("stt_audio_seconds")
        assert set(seconds) == {"stt:alex-0", "stt:sam-5"}
        assert seconds["stt:alex-0"].amount == pytest.approx(len(greta) / 16_000, abs=0.01)
        assert seconds["stt:sam-5"].amount == pytest.approx(len(voss) / 16_000, abs=0.01)
        assert all(u.provider == "whisper" for u in seconds.values())

        # vad's pause: Whisper runs then, and the end (nothing said after it) uses that result
        port = stt_service.metrics_port
        runs = metric(port, "glyphoxa_stt_transcribe_seconds_count", provider="whisper")
        chunks = chunked(greta)
        await vad.start("alex", "alex-7")
        await vad.audio("alex", "alex-7", greta, last=len(chunks) - 1)
        await vad._publish("alex", "alex-7", "pause", chunks[-1], f"pause-{len(chunks) - 1}",
                           seq=len(chunks) - 1)
        await wait_for(lambda: metric(port, "glyphoxa_stt_transcribe_seconds_count",
                                      provider="whisper") == runs + 1, 30)
        await vad.audio("alex", "alex-7", greta, first=len(chunks) - 1)
        await vad.end("alex", "alex-7", greta)
        await wait_for(lambda: len(finals.items) == 3, 60)
        assert finals.items[2][2].text == t0.text
        assert metric(port, "glyphoxa_stt_transcribe_seconds_count", provider="whisper") == runs + 1
        assert metric(port, "glyphoxa_stt_pause_transcriptions_total", result="used") == 1

        assert metric(port, "glyphoxa_stt_rejected_messages_total", reason="malformed") == 1
        assert metric(port, "glyphoxa_stt_rejected_messages_total", reason="unknown_utterance") == 1
        assert metric(port, "glyphoxa_stt_utterances_total", result="text") == 3
        assert metric(port, "glyphoxa_stt_transcribe_seconds_count", provider="whisper") >= 2
        assert metric(port, "glyphoxa_stt_sessions_active") == 1

        await stop_session(nc, subjects)
        await wait_for(lambda: claim_released(js, subjects), 30)
        await wait_for(lambda: input_consumer_gone(js, subjects), 10)
        assert metric(port, "glyphoxa_stt_sessions_active") == 0
    finally:
        await finals.close()
        await usage.close()
    log = stt_service.log_path.read_text()
    assert "whisper model loaded" in log and "rejected message" in log


async def test_fake_provider_follows_its_script(nc, tenant, tmp_path, nats_url):
    """Also: usage per utterance, and the replica's heartbeat (listing the session while it
    serves it, deleted at SIGTERM rather than left to expire)."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps(["Greta, one ale please.", "And one for my friend."]))
    replica = "stt-fake.1"  # a dot is not allowed in a KV key: the key is sanitised
    service = start_stt(nats_url, tmp_path / "stt.log", STT_PROVIDER="fake",
                        STT_FAKE_SCRIPT=str(script), SERVICE_REPLICA=replica)
    subjects = SessionSubjects(tenant, SESSION)
    js = nc.jetstream()
    finals = await Finals().follow(js, subjects)
    usage = await UsageLog().follow(js, subjects)
    try:
        service.wait_ready()
        await wait_for(lambda: heartbeat_of(js, "stt", replica), 10)
        assert (await heartbeat_of(js, "stt", replica)).sessions == []  # type: ignore[union-attr]
        await begin_session(nc, subjects)
        tone = (3000 * np.sin(np.arange(8000) / 5)).astype(np.int16)
        vad = Vad(js, subjects)
        await vad.utterance("alex", "alex-0", tone)
        await vad.utterance("alex", "alex-40", tone)
        await wait_for(lambda: len(finals.items) == 2, 30)
        assert [t.text for _, _, t in finals.items] == script_lines(script)
        assert all(t.provider == "fake" and t.audio_seconds == 0.5 for _, _, t in finals.items)

        await wait_for(lambda: len(usage.items) == 2, 10)
        assert [(s, m) for s, m, _ in usage.items] == [
            (subjects.usage("stt"), f"usage:{tenant}.{SESSION}:stt_audio_seconds:stt:{u}")
            for u in ("alex-0", "alex-40")]
        assert all((u.metric, u.amount, u.provider, u.stage) == (
            "stt_audio_seconds", 0.5, "fake", "stt") for _, _, u in usage.items)

        beat = await heartbeat_of(js, "stt", replica)
        assert beat is not None and beat.sessions == [f"{tenant}.{SESSION}"]
        assert beat.capacity == 8 and beat.started_ns <= beat.at_ns
        await asyncio.to_thread(service.stop)  # SIGTERM while it holds the session
        # deleted, not expired: gone well within the 6 s TTL
        assert await heartbeat_of(js, "stt", replica) is None
    finally:
        await finals.close()
        await usage.close()
        service.stop()


def script_lines(path: Path) -> list[str]:
    return json.loads(path.read_text())


@needs_corpus
async def test_failover_mid_utterance_finishes_each_utterance_once(nc, tenant, tmp_path, nats_url):
    """kill -9 the replica holding the session while an utterance is open: the other replica
    takes the claim after the lease, replays from the open utterance's start and publishes
    every final exactly once (the replayed, already published one is de-duplicated)."""
    replicas = [start_stt(nats_url, tmp_path / f"stt-{i}.log", SERVICE_REPLICA=f"stt-{i}")
                for i in range(2)]
    subjects = SessionSubjects(tenant, SESSION)
    js = nc.jetstream()
    vad = Vad(js, subjects)
    finals = await Finals().follow(js, subjects)
    try:
        for replica in replicas:
            replica.wait_ready()
        await begin_session(nc, subjects)
        await wait_for(lambda: any(holds(r, subjects) for r in replicas), 30)
        holder = next(r for r in replicas if holds(r, subjects))
        survivor = next(r for r in replicas if r is not holder)

        long_line = line16k("line_06.wav")  # 7 s of table talk, stays open across the kill
        short_line = line16k("line_01.wav")  # "Greta, how much for the longsword?"
        await vad.start("alex", "alex-0")
        await vad.audio("alex", "alex-0", long_line, last=30)
        await vad.utterance("sam", "sam-3", short_line)  # finishes on the holder
        await wait_for(lambda: len(finals.items) == 1, 30)
        holder.kill9()

        await vad.audio("alex", "alex-0", long_line, first=30)
        await vad.end("alex", "alex-0", long_line)
        await vad.utterance("sam", "sam-9", line16k("line_21.wav"))
        await wait_for(lambda: holds(survivor, subjects), 60)
        await wait_for(lambda: len(finals.by_utterance()) == 3, 60)
        await asyncio.sleep(1.0)  # anything published twice would be stored by now

        got = finals.by_utterance()
        assert {u: len(ts) for u, ts in got.items()} == {"sam-3": 1, "alex-0": 1, "sam-9": 1}
        assert "greta" in words(got["sam-3"][0].text)
        assert {"forge", "lock"} <= set(words(got["alex-0"][0].text)), got["alex-0"][0].text
        assert "greta" in words(got["sam-9"][0].text)
        assert got["alex-0"][0].audio_seconds == pytest.approx(len(long_line) / 16_000, abs=0.01)

        await stop_session(nc, subjects)
        await wait_for(lambda: claim_released(js, subjects), 30)
    finally:
        await finals.close()
        for replica in replicas:
            replica.stop()
