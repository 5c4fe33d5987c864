"""``VAD_*`` settings, parsed once in ``__main__`` and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from glyphoxa_runtime.settings import ServiceSettings
from glyphoxa_vad.segmenter import SegmenterConfig


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VAD_", extra="ignore")

    engine: Literal["silero", "webrtc"] = Field(
        "silero", description="silero (onnxruntime, CPU) or webrtc (light, energy/GMM based)")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="speech probability that starts speech")
    min_speech_ms: int = Field(200, ge=20, le=5_000, description="speech needed to open an utterance")
    min_silence_ms: int = Field(500, ge=100, le=10_000, description="silence that ends an utterance")
    preroll_ms: int = Field(200, ge=0, le=1_000, description="audio kept before the speech onset")
    max_utterance_ms: int = Field(20_000, ge=1_000, le=120_000, description="longer utterances are cut")
    bargein_ms: int = Field(600, ge=0, le=10_000, description="speech after which ctl.bargein is sent")
    pause_ms: int = Field(
        200, ge=0, le=5_000,
        description="silence (the speaker's frames stopped) after which vad tells stt the line "
                    "may be over, so a local recognizer can start before the end; 0: never")
    chunk_ms: int = Field(160, ge=20, le=1_000, description="PCM chunk size of vad.<speaker> audio")
    max_speakers: int = Field(32, ge=1, le=1_000, description="speakers tracked per session")
    capacity: int = Field(8, ge=1, le=1_000, description="sessions one replica serves at once")
    webrtc_aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad mode (3 = most strict)")
    webrtc_frame_ms: Literal[10, 20, 30] = Field(30, description="webrtcvad analysis frame")
    silero_threads: int = Field(1, ge=1, le=16, description="onnxruntime intra-op threads")
    smart_turn: bool = Field(
        False, description="end turns with the Smart Turn v3.2 model instead of a fixed silence")
    smart_turn_silence_ms: int = Field(
        200, ge=50, le=5_000, description="silence after which the Smart Turn model is asked")
    smart_turn_max_silence_ms: int = Field(
        1_200, ge=100, le=10_000,
        description="with Smart Turn: silence that ends an utterance whatever the model says")
    smart_turn_recheck_ms: int = Field(
        300, ge=50, le=5_000,
        description="with Smart Turn: further silence after which an unfinished turn is asked again")
    smart_turn_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="Smart Turn probability of a finished turn that ends it")
    smart_turn_threads: int = Field(1, ge=1, le=16, description="Smart Turn onnxruntime intra-op threads")
    smart_turn_model: Path | None = Field(
        None, description="Smart Turn model file (default: the one in the vad package); "
                          "its sha256 must be the pinned one")

    @model_validator(mode="after")
    def _silence_fits(self) -> Settings:
        if self.max_utterance_ms <= self.min_speech_ms + self.preroll_ms:
            raise ValueError("max_utterance_ms must exceed min_speech_ms + preroll_ms")
        if self.smart_turn and self.smart_turn_silence_ms >= self.smart_turn_max_silence_ms:
            raise ValueError("smart_turn_silence_ms must be below smart_turn_max_silence_ms")
        return self

    def segmenter_config(self) -> SegmenterConfig:
        return SegmenterConfig(
            threshold=self.threshold,
            min_speech_ms=self.min_speech_ms,
            min_silence_ms=self.min_silence_ms,
            preroll_ms=self.preroll_ms,
            max_utterance_ms=self.max_utterance_ms,
            bargein_ms=self.bargein_ms,
            chunk_ms=self.chunk_ms,
            pause_ms=self.pause_ms or None,
            turn_silence_ms=self.smart_turn_silence_ms if self.smart_turn else None,
            turn_max_silence_ms=self.smart_turn_max_silence_ms,
            turn_recheck_ms=self.smart_turn_recheck_ms,
            turn_threshold=self.smart_turn_threshold,
        )
