"""Prometheus metrics of the vad service (``glyphoxa_vad_*``). Labels are bounded: engine,
end reason, rejection reason; never tenant, session or speaker.

The stage-wide ones (sessions active, rejected messages) come from
``glyphoxa_runtime.service.StageMetrics``.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_FAST = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05)

FRAMES = Counter("glyphoxa_vad_frames_total", "audio.in frames decoded and analysed", ["engine"])
UTTERANCES = Counter(
    "glyphoxa_vad_utterances_total", "utterances ended, by what ended them", ["engine", "reason"])
PAUSES = Counter(
    "glyphoxa_vad_pauses_total", "pauses told to stt (the speaker went quiet mid-utterance)",
    ["engine"])
BARGEINS = Counter("glyphoxa_vad_bargeins_total", "ctl.bargein events published", ["engine"])
AUDIO_SECONDS = Counter(
    "glyphoxa_vad_utterance_audio_seconds_total", "seconds of utterance audio published", ["engine"])
DECODE_SECONDS = Histogram("glyphoxa_vad_decode_seconds", "opus decode time per frame", buckets=_FAST)
INFERENCE_SECONDS = Histogram(
    "glyphoxa_vad_inference_seconds", "VAD inference time per analysis chunk", ["engine"],
    buckets=_FAST)
END_DECISION_SECONDS = Histogram(
    "glyphoxa_vad_end_decision_seconds",
    "speech end (capture time) to the end-of-utterance decision (wall clock)",
    ["reason"], buckets=(0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0))
TURN_CHECKS = Counter(
    "glyphoxa_vad_turn_checks_total",
    "Smart Turn end-of-turn decisions: finished (the utterance ends now), unfinished (wait on)",
    ["result"])
TURN_MODEL_SECONDS = Histogram(
    "glyphoxa_vad_turn_model_seconds", "Smart Turn features + model run time per check",
    buckets=(0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0))
