"""``TTS_*`` settings, composed with the lib-level ``NATS_*`` and ``METRICS_*`` pieces."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from glyphoxa_runtime.settings import ServiceSettings

ProviderName = Literal["piper", "espeak", "fake"]


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_", extra="ignore")

    provider: ProviderName = Field(
        "piper", description="default provider; an NPC's voice.provider overrides it")
    piper_model_path: str = Field(
        "", description="piper .onnx voice (its .onnx.json beside it); default en_US-joe-medium")
    synth_timeout_s: float = Field(
        20.0, gt=0, description="longest wait for the next chunk of audio from a provider")
    max_parallel_synth: int = Field(
        2, ge=1, le=32, description="syntheses running at once per provider (CPU threads)")
    max_chars: int = Field(
        1000, ge=1, le=4000, description="longest reply chunk spoken; longer ones are rejected")
    capacity: int = Field(8, ge=1, le=256, description="sessions one replica serves at once")
    opus_bitrate: int = Field(64_000, ge=6_000, le=510_000)
    turn_idle_timeout_s: float = Field(
        120.0, gt=0, description="an unfinished turn with no new chunk for this long is closed")
