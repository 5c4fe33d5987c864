"""Speech-to-text providers behind one interface (``base.SttProvider``)."""

from __future__ import annotations

from glyphoxa_stt.config import Settings
from glyphoxa_stt.providers.base import SttCapabilities, SttProvider, SttResult

__all__ = ["SttCapabilities", "SttProvider", "SttResult", "build_provider"]


def build_provider(settings: Settings) -> SttProvider:
    """The provider ``STT_PROVIDER`` names; vendor modules are imported only when chosen."""
    base = {"timeout_s": settings.timeout_s, "retries": settings.retries}
    if settings.provider == "fake":
        from glyphoxa_stt.providers.fake import FakeStt

        script = FakeStt.load_script(settings.fake_script) if settings.fake_script else []
        return FakeStt(script, text=settings.fake_text, delay_s=settings.fake_delay_s, **base)
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
