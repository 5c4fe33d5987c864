"""Speech-to-text providers behind one interface (``base.SttProvider``)."""

from __future__ import annotations

from glyphoxa_stt.config import Settings
from glyphoxa_stt.providers.base import SttCapabilities, SttProvider, SttResult

__all__ = ["SttCapabilities", "SttProvider", "SttResult", "build_provider"]


def build_provider(settings: Settings, name: str | None = None,
                   api_key: str | None = None) -> SttProvider:
    """The provider ``name`` (default ``STT_PROVIDER``); vendor modules are imported only when
    chosen. ``api_key`` replaces the configured key of a cloud provider (a tenant's own)."""
    name = name or settings.provider
    base = {"timeout_s": settings.timeout_s, "retries": settings.retries}
    if name == "fake":
        from glyphoxa_stt.providers.fake import FakeStt

        script = FakeStt.load_script(settings.fake_script) if settings.fake_script else []
        return FakeStt(script, text=settings.fake_text, delay_s=settings.fake_delay_s,
                       spread=settings.fake_script_spread, **base)
    if name == "deepgram":
        from glyphoxa_stt.providers.deepgram import DeepgramConfig, DeepgramStt

        return DeepgramStt(DeepgramConfig(
            api_key=api_key or settings.deepgram_api_key.get_secret_value(),
            base_url=settings.deepgram_base_url,
            ws_url=settings.deepgram_ws_url,
            model=settings.deepgram_model,
            endpointing_ms=settings.deepgram_endpointing_ms,
            finalize_timeout_s=settings.deepgram_finalize_timeout_s,
        ), keyless_ok=bool(settings.nats.secrets_key.get_secret_value()), **base)
    from glyphoxa_stt.providers.whisper import WhisperConfig, WhisperStt

    return WhisperStt(WhisperConfig(
        model_path=settings.whisper_model_path,
        cpu_threads=settings.whisper_cpu_threads,
        workers=settings.whisper_workers,
        compute_type=settings.whisper_compute_type,
        beam_size=settings.whisper_beam_size,
        temperatures=settings.whisper_temperatures,
        no_speech_threshold=settings.whisper_no_speech_threshold,
        log_prob_threshold=settings.whisper_log_prob_threshold,
        min_speech_dbfs=settings.whisper_min_speech_dbfs,
        min_speech_s=settings.whisper_min_speech_s,
    ), **base)
