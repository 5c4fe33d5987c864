"""The tts service as a process with ``TTS_PROVIDER=elevenlabs``, pointed at the local fake
of ElevenLabs: reply chunks in, opus frames of the fake's speech out, the key kept secret."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from glyphoxa_bus.claims import publish_claims
from glyphoxa_campaign import Campaign, Npc
from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_cli.processes import ServiceProcess
from glyphoxa_events.models import SessionStarted
from glyphoxa_events.subjects import SessionSubjects
from tests.integration.test_tts_service import collect, decode, send_turn, share_heard, transcribe
from tests.support.fakes.elevenlabs import API_KEY, FakeElevenLabs, Reply
from tests.support.service import UsageLog, metric, wait_for

pytestmark = pytest.mark.integration

VOICE_ID = "Gr0mVoice0123456789a"
CAMPAIGN = Campaign(name="Harbor", npcs=(
    Npc(name="Grom", persona="A dwarf innkeeper.",
        voice=VoiceSpec(elevenlabs_voice_id=VOICE_ID, stability=0.5)),
))
SENTENCES = ("The dragon sleeps beneath the northern mountain.",
             "Bring me three silver coins and I will show you the way.")


async def test_tts_service_speaks_through_elevenlabs(nc, tenant, nats_url, tmp_path: Path):
    subjects = SessionSubjects(tenant, "s1")
    js = nc.jetstream()
    got, subs = await collect(nc, subjects)
    usage = await UsageLog().follow(js, subjects)
    fake = FakeElevenLabs(default=Reply(first_chunk_delay_s=0.05, chunk_delay_s=0.02))
    with fake.in_thread():
        service = ServiceProcess("tts", log_path=tmp_path / "tts.log", env={
            "NATS_URL": nats_url, "LOG_LEVEL": "debug", "TTS_PROVIDER": "elevenlabs",
            "TTS_ELEVENLABS_API_KEY": API_KEY, "TTS_ELEVENLABS_BASE_URL": fake.url}).start()
        try:
            await asyncio.to_thread(service.wait_ready)
            started = SessionStarted(campaign=CAMPAIGN, started_ns=time.time_ns())
            await js.publish(subjects.ctl("session.started"), started.to_bytes(), headers={
                "Nats-Msg-Id": f"ctl:{tenant}.s1:session.started:1"})
            await publish_claims(nc, tenant, "s1", ["tts"])
            await send_turn(js, subjects, "alex-0", "grom", SENTENCES)
            await wait_for(lambda: "alex-0" in got.done, 60)
            await wait_for(lambda: len(usage.items) == 2, 10)
            port = service.metrics_port
            assert metric(port, "glyphoxa_tts_synth_seconds_count", provider="elevenlabs") == 2
            assert metric(port, "glyphoxa_tts_provider_errors_total") == 0
        finally:
            for sub in subs:
                await sub.unsubscribe()
            await usage.close()
            await asyncio.to_thread(service.stop)

    assert [r.voice_id for r in fake.requests] == [VOICE_ID, VOICE_ID]
    assert all(r.key_ok and r.finished for r in fake.requests)
    assert fake.requests[0].query["output_format"] == "pcm_48000"
    assert fake.requests[0].body["model_id"] == "eleven_flash_v2_5"
    assert fake.requests[0].body["voice_settings"] == {"stability": 0.5}

    done, frames = got.done["alex-0"], got.frames["alex-0"]
    assert not done.cancelled and done.frames == len(frames) > 100
    assert {s for _, _, s in frames} == {subjects.audio_out("grom")}
    chars = {k: (u.amount, u.provider) for k, u in usage.of("tts_characters").items()}
    assert chars == {"tts:alex-0:0": (len(SENTENCES[0]), "elevenlabs"),
                     "tts:alex-0:1": (len(SENTENCES[1]), "elevenlabs")}
    heard = transcribe(decode(frames))
    assert share_heard(SENTENCES, heard) >= 0.7, heard
    log = service.log_path.read_text()
    assert '"provider": "elevenlabs"' in log and API_KEY not in log
