"""ElevenLabs without a server: settings, per-NPC voice settings, error texts, missing key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from glyphoxa_campaign.model import VoiceSpec
from glyphoxa_runtime.providers import ProviderUnavailable
from glyphoxa_runtime.settings import load_settings
from glyphoxa_tts.config import Settings
from glyphoxa_tts.providers import ProviderSet, build_provider
from glyphoxa_tts.providers.elevenlabs import _detail, voice_settings

pytestmark = pytest.mark.unit

KEY = "sk_unit0test0key0abcdef"


def test_defaults_are_a_low_latency_model_and_raw_48k_pcm():
    s = Settings(provider="espeak")
    assert s.elevenlabs_model == "eleven_flash_v2_5"
    assert s.elevenlabs_output_format == "pcm_48000"
    assert s.elevenlabs_base_url == "https://api.elevenlabs.io"


def test_elevenlabs_as_default_without_a_key_fails_at_start(monkeypatch, capsys):
    monkeypatch.setenv("TTS_PROVIDER", "elevenlabs")
    monkeypatch.delenv("TTS_ELEVENLABS_API_KEY", raising=False)
    with pytest.raises(SystemExit) as exit_:
        load_settings(Settings, "tts")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tts: invalid configuration:")
    assert "TTS_ELEVENLABS_API_KEY must be set when TTS_PROVIDER=elevenlabs" in err


def test_the_key_is_read_from_the_environment_and_never_shown(monkeypatch):
    monkeypatch.setenv("TTS_PROVIDER", "elevenlabs")
    monkeypatch.setenv("TTS_ELEVENLABS_API_KEY", KEY)
    s = load_settings(Settings, "tts")
    assert s.elevenlabs_api_key.get_secret_value() == KEY
    assert KEY not in repr(s) and KEY not in str(s.model_dump())


def test_bad_output_format_is_a_configuration_error():
    with pytest.raises(ValidationError):
        Settings(provider="espeak", elevenlabs_output_format="mp3_44100_128")


async def test_an_npc_asking_for_elevenlabs_without_a_key_gets_espeak():
    settings = Settings(provider="espeak")
    with pytest.raises(ProviderUnavailable, match="TTS_ELEVENLABS_API_KEY"):
        build_provider("elevenlabs", settings)
    providers = ProviderSet(settings)
    try:
        chosen = await providers.for_voice(VoiceSpec(provider="elevenlabs"))
        assert chosen.name == "espeak"
    finally:
        await providers.aclose()


def test_voice_spec_carries_elevenlabs_settings_and_still_forbids_unknown_keys():
    voice = VoiceSpec(provider="elevenlabs", elevenlabs_voice_id="21m00Tcm4TlvDq8ikWAM",
                      stability=0.4, similarity_boost=0.9, style=0.2, speed=1.1)
    assert voice.elevenlabs_voice_id == "21m00Tcm4TlvDq8ikWAM"
    with pytest.raises(ValidationError):
        VoiceSpec(elevenlabs_voice="x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        VoiceSpec(elevenlabs_voice_id="../../v1/user")  # it goes into the URL path
    with pytest.raises(ValidationError):
        VoiceSpec(speed=1.5)
    with pytest.raises(ValidationError):
        VoiceSpec(stability=1.2)


def test_voice_settings_send_only_what_the_npc_sets():
    assert voice_settings(VoiceSpec()) is None
    sent = voice_settings(VoiceSpec(stability=0.3, style=0.0))
    assert sent is not None and sent.stability == 0.3 and sent.style == 0.0
    assert sent.similarity_boost is None and sent.speed is None


def test_pitch_resampling_slows_the_voice_down_within_elevenlabs_range():
    slower = voice_settings(VoiceSpec(speed=1.1), tempo=1.25)
    assert slower is not None and slower.speed == pytest.approx(0.88)
    clipped = voice_settings(VoiceSpec(), tempo=2.0)
    assert clipped is not None and clipped.speed == pytest.approx(0.7)


@pytest.mark.parametrize("body, text", [
    ({"detail": {"status": "invalid_api_key", "message": "Invalid API key"}},
     "invalid_api_key Invalid API key"),
    ({"detail": [{"loc": ["body", "text"], "msg": "Field required"}]}, "Field required"),
    ("Bad Gateway", "Bad Gateway"),
    (None, "no details"),
    ({"detail": {"message": "x" * 500}}, "x" * 200),
])
def test_error_details_are_short_and_readable(body, text):
    assert _detail(body) == text
