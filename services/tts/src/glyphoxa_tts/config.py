"""``TTS_*`` settings, composed with the lib-level ``NATS_*`` and ``METRICS_*`` pieces."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from glyphoxa_runtime.settings import ServiceSettings

ProviderName = Literal["piper", "espeak", "fake", "elevenlabs"]
ElevenLabsFormat = Literal["pcm_48000", "pcm_44100", "pcm_24000", "pcm_22050", "pcm_16000"]

ELEVENLABS_URL = "https://api.elevenlabs.io"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_", extra="ignore")

    provider: ProviderName = Field(
        "piper", description="default provider; an NPC's voice.provider overrides it")
    breaker_failures: int = Field(
        3, ge=1, le=100, description="retryable failures in a row that open a provider's circuit "
                                     "breaker (its sentences go to espeak meanwhile)")
    breaker_cooldown_s: float = Field(
        30.0, gt=0, le=3600, description="how long an open breaker refuses before one trial call")
    piper_model_path: str = Field(
        "", description="piper .onnx voice (its .onnx.json beside it); default en_US-joe-medium")
    piper_threads: int = Field(
        2, ge=1, le=64, description="onnxruntime threads of one piper synthesis")
    piper_spin: bool = Field(
        False, description="piper's onnxruntime threads spin while they wait for work "
                           "(onnxruntime's default) instead of sleeping: at most a few ms a "
                           "sentence faster on an idle machine, slower when another program "
                           "or stage needs the core")
    synth_timeout_s: float = Field(
        20.0, gt=0, description="longest wait for the next chunk of audio from a provider")
    max_parallel_synth: int = Field(
        2, ge=1, le=32, description="syntheses running at once per provider (CPU threads)")
    max_chars: int = Field(
        1000, ge=1, le=4000, description="longest reply chunk spoken; longer ones are rejected")
    capacity: int = Field(8, ge=1, le=256, description="sessions one replica serves at once")
    opus_bitrate: int = Field(64_000, ge=6_000, le=510_000)
    frames_per_message: int = Field(
        1, ge=1, le=25, description="audio.out frames a message after a turn's first (ADR "
                                    "0010): 10 cuts tts's and nats-server's CPU ~2x at 20 "
                                    "sessions; 1 (one frame a message) until a replica that "
                                    "redoes a turn after a failover cuts its batches as the "
                                    "first did")
    turn_idle_timeout_s: float = Field(
        120.0, gt=0, description="an unfinished turn with no new chunk for this long is closed")
    stale_after_s: float = Field(
        10.0, gt=0, le=600, description="a reply chunk that reaches tts this long after npc-brain "
                                        "wrote it (beyond the audio of its turn already sent) "
                                        "is not spoken and its turn ends as stale: a tts that "
                                        "was paused, starved or took the session over late "
                                        "plays nothing the table has moved past")
    line_stale_after_s: float = Field(
        30.0, gt=0, le=3600, description="a reply whose audio would start this long after the "
                                         "player's line ended (beyond the audio of its turn "
                                         "already sent) is not spoken and its turn ends as "
                                         "stale: the line waited out a broker outage, or the "
                                         "models are far too slow for the table")
    held_ttl_s: float = Field(
        15.0, gt=0, le=600, description="a guessed reply's sentence synthesized ahead "
                                        "(BRAIN_SPECULATE) is dropped when no turn claims it "
                                        "this long")
    fallback: Literal["espeak", "piper"] = Field(
        "espeak", description="what speaks a sentence when a voice's provider fails or its "
                              "breaker is open (piper sounds better; espeak needs no model)")
    elevenlabs_api_key: SecretStr = Field(
        SecretStr(""), description="ElevenLabs API key (xi-api-key); required when elevenlabs "
                                   "is the default provider")
    elevenlabs_base_url: str = Field(
        ELEVENLABS_URL, pattern=r"^https?://", description="ElevenLabs API root")
    elevenlabs_model: str = Field(
        "eleven_flash_v2_5", min_length=1, description="ElevenLabs model (a low-latency one)")
    elevenlabs_default_voice_id: str = Field(
        "JBFqnCBsd6RMkjVDRZzb", pattern=r"^[a-zA-Z0-9]{1,64}$",
        description="ElevenLabs voice of NPCs without voice.elevenlabs_voice_id")
    elevenlabs_output_format: ElevenLabsFormat = Field(
        "pcm_48000", description="raw PCM straight into opus; pcm_24000 (resampled) where the "
                                 "plan has no 48 kHz PCM")

    @model_validator(mode="after")
    def _elevenlabs_has_a_key(self) -> Settings:
        if (self.provider == "elevenlabs" and not self.elevenlabs_api_key.get_secret_value()
                and not self.nats.secrets_key.get_secret_value()):
            raise ValueError("TTS_ELEVENLABS_API_KEY must be set when TTS_PROVIDER=elevenlabs "
                             "(or NATS_SECRETS_KEY, for tenants that store their own key)")
        return self
