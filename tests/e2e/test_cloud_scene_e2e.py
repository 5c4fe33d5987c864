"""The example scene with every stage on its cloud provider: Deepgram (streaming) for stt,
Gemini for the LLM, ElevenLabs for voices, each served by a local fake of the vendor's
wire protocol and reached through the vendor's own SDK.

The stages are configured with no API key at all: the tenant stores its own keys through
the admin API, and they reach the stages sealed, over request/reply. The fake Deepgram
hears the audio with whisper (the NPC names it is sent as keyterms prime it), the fake
ElevenLabs speaks with espeak-ng, so the scene's checks (right NPC, no table talk
answered, the reply audio says the reply) hold as they do on local models.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest

from glyphoxa_cli.admin import tenant_client
from glyphoxa_cli.stack import Stack, save_tenant_key
from tests.e2e.conftest import EXAMPLE_CAMPAIGN, EXAMPLE_SCENE
from tests.e2e.test_scene_e2e import assert_no_errors, check_scene, check_session_record, play
from tests.support.fakes import deepgram, elevenlabs, gemini
from tests.support.pg import fresh_database

TENANT = "e2e-cloud"


@pytest.fixture(scope="module")
def fakes():
    with (deepgram.FakeDeepgram(recognizer=deepgram.whisper_recognizer()).in_thread() as dg,
          gemini.FakeGemini().in_thread() as gm,
          elevenlabs.FakeElevenLabs().in_thread() as el):
        yield dg, gm, el


@pytest.fixture(scope="module")
def stack(tmp_path_factory, pg_admin_dsn, fakes):
    dg, gm, el = fakes
    env = {"STT_PROVIDER": "deepgram", "STT_DEEPGRAM_BASE_URL": dg.url,
           "STT_DEEPGRAM_WS_URL": dg.ws_url, "STT_FALLBACK": "whisper",
           "BRAIN_LLM_PROVIDER": "gemini", "BRAIN_GEMINI_BASE_URL": gm.url,
           "TTS_PROVIDER": "elevenlabs", "TTS_ELEVENLABS_BASE_URL": el.url}
    s = Stack(tmp_path_factory.mktemp("cloud-stack"), env=env,
              pg_dsn=fresh_database(pg_admin_dsn))
    s.start(progress=lambda m: None)
    yield s
    s.stop()


async def store_tenant_keys(stack: Stack) -> None:
    client, key = await tenant_client(stack.api_url, stack.keys()["operator_key"], TENANT)
    async with client:
        for name, value in (("deepgram", deepgram.API_KEY), ("gemini", gemini.API_KEY),
                            ("elevenlabs", elevenlabs.API_KEY)):
            await client.call("PUT", f"/v1/secrets/{name}", json={"value": value})
    save_tenant_key(stack.home, TENANT, key)  # the scene player uses this tenant's key


def by_result(stack: Stack, process: str, metric: str) -> dict[str, float]:
    """A process's counter ``metric{result=...}``, read from its /metrics endpoint."""
    port = stack.by_name(process).metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            found[result] = float(line.rsplit(" ", 1)[1])
    print(metric, found)
    return found


def cloud_campaign(path: Path) -> Path:
    """The example campaign with each NPC voiced by ElevenLabs (a voice id of its own)."""
    text = EXAMPLE_CAMPAIGN.read_text(encoding="utf-8")
    for n, local in enumerate(("provider: piper", "provider: piper", "provider: espeak")):
        text = text.replace(local, f"provider: elevenlabs\n      elevenlabs_voice_id: Npc{n}Voice", 1)
    path.write_text(text, encoding="utf-8")
    return path


def test_example_scene_on_cloud_providers(stack, fakes, tmp_path):
    dg, gm, el = fakes
    asyncio.run(store_tenant_keys(stack))
    out = tmp_path / "cloud"
    campaign = cloud_campaign(tmp_path / "campaign.yaml")
    rows = play(stack, EXAMPLE_SCENE, campaign, out, speed=2.0, tenant=TENANT)
    check_scene(rows, EXAMPLE_SCENE, out)
    check_session_record(rows, out)
    assert_no_errors(stack)

    # every line went to Deepgram as a live stream, with the NPC names as keyterms, under
    # the tenant's own key (the stages have none of their own)
    streams = [r for r in dg.requests if r.streaming]
    assert len(streams) >= len(rows) and all(r.key_ok for r in dg.requests)
    assert all("Bruno" in r.keyterms and "Captain Rowan" in r.keyterms for r in streams)
    assert all(r.finalize or r.close_stream for r in streams)
    # every answered line was a Gemini call; with BRAIN_SPECULATE, interims started guesses
    # too (the whisper-backed fake's interims are whisper on part of the line, so most are
    # discarded): each guess is one more call, counted by the brain's metric
    answered = [r for r in rows if r["outcome"] == "answered"]
    guesses = by_result(stack, "npc-brain-1", "glyphoxa_npc_brain_reply_guesses_total")
    assert sum(guesses.values()) > 0, guesses
    # and their first sentences were synthesized ahead, held in tts (BRAIN_SPECULATE_AUDIO):
    # claimed by the turn that adopted the guess, or discarded; never heard otherwise (the
    # scene check above hears each reply as said)
    held = by_result(stack, "tts-1", "glyphoxa_tts_held_total")
    assert sum(held.values()) > 0, held
    assert len(gm.requests) >= len(answered) and all(r.key_ok for r in gm.requests)
    assert len(el.requests) >= len(answered) and all(r.key_ok for r in el.requests)
    assert {r.voice_id for r in el.requests} <= {"Npc0Voice", "Npc1Voice", "Npc2Voice"}
    record = json.loads((out / "session.json").read_text())
    assert {t["llm_provider"] for t in record["turns"] if t["outcome"] == "answered"} == {"gemini"}
    logs = "".join(stack.logs().values())
    for secret in (deepgram.API_KEY, gemini.API_KEY, elevenlabs.API_KEY):
        assert secret not in logs
