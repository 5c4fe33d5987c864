"""The ElevenLabs provider through the real SDK against a local fake of the vendor's API:
streaming, per-NPC request fields, error mapping, fallback, barge-in and the key's secrecy."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from glyphoxa_campaign import Campaign, Npc
from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_events.models import AudioDone, Flush, SessionStarted, parse_control
from glyphoxa_runtime.logs import TRACE
from glyphoxa_runtime.providers import ProviderError, ProviderTimeout
from glyphoxa_tts.config import Settings
from glyphoxa_tts.core import TtsSession
from glyphoxa_tts.providers import ProviderSet
from glyphoxa_tts.providers.elevenlabs import ElevenLabsProvider
from tests.support.fakes.elevenlabs import API_KEY, FakeElevenLabs, Reply
from tests.unit.tts.tts_helpers import CollectingPublisher, context, reply, until

pytestmark = pytest.mark.integration

SENTENCE = "The bridge toll is two copper pieces, and the ferry costs three."
NPC_VOICE = VoiceSpec(provider="elevenlabs", elevenlabs_voice_id="Gr0mVoice0123456789a",
                      stability=0.35, similarity_boost=0.8, style=0.1, speed=1.1)
CAMPAIGN = Campaign(name="Millbrook", npcs=(
    Npc(name="Grom", persona="A dwarf innkeeper.", voice=NPC_VOICE),
    Npc(name="Elira", persona="An elven scout.", voice=VoiceSpec(provider="elevenlabs")),
))


@pytest.fixture
async def fake():
    async with FakeElevenLabs() as server:
        yield server


def provider_for(fake: FakeElevenLabs, key: str = API_KEY, **kw: object) -> ElevenLabsProvider:
    options = {"base_url": fake.url, "model": "eleven_flash_v2_5",
               "default_voice_id": "DefaultVoice00000000", **kw}
    return ElevenLabsProvider(key, **options)  # type: ignore[arg-type]


class Session:
    """A tts core whose default provider is ElevenLabs, served by the fake."""

    def __init__(self, fake: FakeElevenLabs, key: str = API_KEY, **settings: object):
        self.settings = Settings(
            provider="elevenlabs", elevenlabs_api_key=key, elevenlabs_base_url=fake.url,
            **settings)  # type: ignore[arg-type]
        self.publisher = CollectingPublisher()
        self.providers = ProviderSet(self.settings)
        self.core = TtsSession(context(self.publisher), self.providers, self.settings)

    async def __aenter__(self) -> Session:
        await self.core.on_control(SessionStarted(campaign=CAMPAIGN, started_ns=1))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.providers.aclose()

    def done(self) -> list[AudioDone]:
        events = [parse_control(s.data) for s in self.publisher.controls()]
        return [e for e in events if isinstance(e, AudioDone)]


async def synthesize(provider: ElevenLabsProvider, text: str = SENTENCE,
                     voice: VoiceSpec = NPC_VOICE) -> np.ndarray:
    chunks = [c async for c in provider.synthesize(text, voice)]
    return np.concatenate(chunks)


async def test_first_frame_goes_out_while_elevenlabs_is_still_streaming(fake):
    fake.script(Reply(chunk_ms=100, chunk_delay_s=0.1))
    async with Session(fake) as s:
        await s.core.on_message(reply("alex-0", 0, SENTENCE, final=True))
        (request,) = fake.requests
        frames = s.publisher.frames()
    assert request.finished and request.chunks > 10
    assert request.last_chunk_at is not None
    assert frames[0].at < request.last_chunk_at - 0.5  # long before the last chunk was sent
    (done,) = s.done()
    assert not done.cancelled and done.frames == len(frames)
    # every sample the fake sent became a frame: 20 ms each, the last one padded
    assert done.frames == -(-len(await fake.speech(SENTENCE, 48_000)) // 960)


async def test_request_carries_the_npcs_voice_model_and_format(fake):
    async with Session(fake, elevenlabs_model="eleven_turbo_v2_5",
                       elevenlabs_output_format="pcm_24000",
                       elevenlabs_default_voice_id="DefaultVoice00000000") as s:
        await s.core.on_message(reply("alex-0", 0, SENTENCE, final=True))
        await s.core.on_message(reply("bea-0", 0, "Follow me.", final=True, npc="elira"))
    grom, elira = fake.requests
    assert grom.key_ok and grom.voice_id == "Gr0mVoice0123456789a"
    assert grom.query["output_format"] == "pcm_24000"
    assert grom.body["model_id"] == "eleven_turbo_v2_5" and grom.body["text"] == SENTENCE
    assert grom.body["voice_settings"] == {
        "stability": 0.35, "similarity_boost": 0.8, "style": 0.1, "speed": 1.1}
    assert elira.voice_id == "DefaultVoice00000000" and "voice_settings" not in elira.body
    # 24 kHz PCM resampled to 48 kHz frames: the duration is kept
    frames = [f for f in s.publisher.frames() if f.headers["Glx-Turn"] == "alex-0"]
    seconds = len(await fake.speech(SENTENCE, 24_000)) / 24_000
    assert len(frames) * 0.02 == pytest.approx(seconds, abs=0.03)
    usage = {u.key: (u.amount, u.provider) for u, _ in s.publisher.usage()}
    assert usage["tts:alex-0:0"] == (len(SENTENCE), "elevenlabs")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("case, retryable, text", [
    (Reply(status=429), True, "HTTP 429: too_many_concurrent_requests"),
    (Reply(status=500), True, "HTTP 500: internal_server_error"),
    (Reply(status=503), True, "HTTP 503: system_busy"),
    (Reply(drop_after_chunks=3), True, "connection failed (RemoteProtocolError)"),
    ("wrong key", False, "HTTP 401: invalid_api_key"),
    ("unknown voice", False, "HTTP 400: voice_not_found"),
    ("no text", False, "HTTP 422: Field required"),
    ("no server", True, "connection failed (ConnectError)"),
])
async def test_vendor_errors_map_to_ours_without_the_key(fake, caplog, case, retryable, text):
    caplog.set_level(TRACE)
    key, said = API_KEY, SENTENCE
    if isinstance(case, Reply):
        fake.script(case)
    elif case == "wrong key":
        key = API_KEY[:-4] + "zzzz"
    elif case == "unknown voice":
        fake.voices = {"SomeOtherVoice"}
    elif case == "no text":
        said = " "
    provider = provider_for(fake, key)
    if case == "no server":
        provider = provider_for(fake, key, base_url=f"http://127.0.0.1:{closed_port()}")
    try:
        with pytest.raises(ProviderError) as err:
            await synthesize(provider, said)
    finally:
        await provider.aclose()
    assert err.value.retryable is retryable and err.value.provider == "elevenlabs"
    assert text in str(err.value)
    assert err.value.__cause__ is None  # no vendor exception rides along
    for secret in (API_KEY, key):
        assert secret not in str(err.value) and secret not in caplog.text


async def test_slow_first_audio_is_a_retryable_timeout(fake):
    fake.script(Reply(first_chunk_delay_s=1.0))
    provider = provider_for(fake, timeout_s=0.3)
    try:
        with pytest.raises(ProviderTimeout) as err:
            await synthesize(provider)
    finally:
        await provider.aclose()
    assert err.value.retryable


@pytest.mark.parametrize("failure", [Reply(status=500), Reply(status=401)])
async def test_turn_is_still_spoken_by_espeak_when_elevenlabs_fails(fake, caplog, failure):
    fake.script(failure)
    async with Session(fake) as s:
        await s.core.on_message(reply("alex-0", 0, "Still spoken.", final=True))
    (done,) = s.done()
    assert not done.cancelled and done.frames > 25 and len(fake.requests) == 1
    assert "tts provider failed: elevenlabs: HTTP" in caplog.text
    assert API_KEY not in caplog.text


async def test_wrong_key_never_reaches_a_log_line(fake, caplog):
    caplog.set_level(TRACE)
    wrong = "sk_wrong0key0that0must0stay0secret"
    async with Session(fake, key=wrong) as s:
        await s.core.on_message(reply("alex-0", 0, "Hello.", final=True))
    assert fake.requests[0].key_ok is False
    assert wrong not in caplog.text and "invalid_api_key" in caplog.text


async def test_flush_mid_sentence_cancels_the_upstream_request(fake):
    fake.script(Reply(chunk_ms=100, chunk_delay_s=0.1))
    async with Session(fake) as s:
        speaking = asyncio.create_task(s.core.on_message(reply("alex-0", 0, SENTENCE)))
        await until(lambda: len(s.publisher.frames()) >= 10)
        await s.core.on_control(Flush(turn_id="alex-0", reason="bargein"))
        await asyncio.wait_for(speaking, timeout=1)
        (request,) = fake.requests
        await until(request.ended.is_set, timeout_s=2)
    assert request.client_gone and not request.finished
    assert request.chunks_sent < request.chunks
    (done,) = s.done()
    assert done.cancelled and done.frames == len(s.publisher.frames())


async def test_an_open_breaker_sends_sentences_to_espeak_until_one_trial_succeeds(fake, caplog):
    fake.script(*[Reply(status=503)] * 2)
    async with Session(fake, breaker_failures=2, breaker_cooldown_s=0.5) as s:
        for i in range(2):  # two retryable failures in a row open the breaker
            await s.core.on_message(reply(f"alex-{i}", 0, "Still spoken.", final=True))
        assert s.providers.breaker("elevenlabs").state == "open"
        await s.core.on_message(reply("alex-2", 0, "Spoken by espeak at once.", final=True))
        assert len(fake.requests) == 2  # the third sentence never went to ElevenLabs
        await asyncio.sleep(0.6)  # the cooldown: one trial, which succeeds, closes it
        await s.core.on_message(reply("alex-3", 0, "Back to ElevenLabs.", final=True))
        assert len(fake.requests) == 3 and fake.requests[-1].finished
        assert s.providers.breaker("elevenlabs").state == "closed"
    assert all(not d.cancelled and d.frames > 10 for d in s.done()) and len(s.done()) == 4
    assert "circuit breaker open" in caplog.text and "circuit breaker closed" in caplog.text


class StoredKeys:
    """Stands in for ``TenantSecrets``: the keys tenants stored, by tenant."""

    def __init__(self, **keys: str):
        self.keys = keys

    async def get(self, tenant: str, name: str) -> str | None:
        return self.keys.get(tenant) if name == "elevenlabs" else None


async def test_a_tenants_own_key_is_used_for_its_sessions_only(fake, caplog):
    settings = Settings(provider="elevenlabs", elevenlabs_api_key="sk_operator_key_not_valid",
                        elevenlabs_base_url=fake.url)
    providers = ProviderSet(settings, keys=StoredKeys(t1=API_KEY))  # type: ignore[arg-type]
    try:
        own = await providers.for_voice(NPC_VOICE, "t1")
        configured = await providers.for_voice(NPC_VOICE, "t2")
        assert own is not configured and own is await providers.for_voice(NPC_VOICE, "t1")
        await synthesize(own)  # type: ignore[arg-type]
        with pytest.raises(ProviderError):
            await synthesize(configured)  # type: ignore[arg-type]
    finally:
        await providers.aclose()
    assert [r.key_ok for r in fake.requests] == [True, False]
    assert API_KEY not in caplog.text


async def test_without_a_configured_key_tenants_bring_their_own(fake):
    from glyphoxa_session_control.crypto import new_secret_key

    settings = Settings(provider="elevenlabs", elevenlabs_base_url=fake.url,
                        nats={"secrets_key": new_secret_key()})  # type: ignore[arg-type]
    providers = ProviderSet(settings, keys=StoredKeys(t1=API_KEY))  # type: ignore[arg-type]
    try:
        assert providers.default.name == "espeak"  # no key of its own: espeak stands in
        own = await providers.for_voice(NPC_VOICE, "t1")
        assert own.name == "elevenlabs"
        await synthesize(own)  # type: ignore[arg-type]
        assert (await providers.for_voice(NPC_VOICE, "t2")).name == "espeak"
    finally:
        await providers.aclose()
    assert [r.key_ok for r in fake.requests] == [True]


@pytest.mark.models
async def test_tts_fallback_piper_speaks_when_elevenlabs_fails(fake):
    fake.script(Reply(status=503))
    async with Session(fake, fallback="piper") as s:
        assert s.providers.fallback().name == "piper"
        await s.core.on_message(reply("alex-0", 0, "Still spoken.", final=True))
    (done,) = s.done()
    assert not done.cancelled and done.frames > 25
    [usage] = [u for u, _ in s.publisher.usage()]
    assert usage.provider == "piper"  # counted under the provider that spoke
