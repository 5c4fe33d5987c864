"""Prometheus metrics of the stt service (``glyphoxa_stt_<thing>_<unit>``; labels bounded).

The stage-level ones (sessions, rejected messages) come from ``glyphoxa_runtime.StageMetrics``.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TRANSCRIBE_SECONDS = Histogram(
    "glyphoxa_stt_transcribe_seconds",
    "wall time of one transcription (queueing for a model worker included)",
    ["provider"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
)
AUDIO_SECONDS = Counter(
    "glyphoxa_stt_audio_seconds", "seconds of utterance audio transcribed", ["provider"])
REAL_TIME_FACTOR = Histogram(
    "glyphoxa_stt_real_time_factor_ratio",
    "transcription time divided by audio duration (below 1 is faster than real time)",
    ["provider"],
    buckets=(0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
)
PROVIDER_ERRORS = Counter(
    "glyphoxa_stt_provider_errors", "failed provider calls (each attempt)",
    ["provider", "retryable"])
UTTERANCES = Counter(
    "glyphoxa_stt_utterances",
    "utterances finished, by result: text, empty, suppressed (hallucination/silence dropped), "
    "failed (provider error), rejected (oversized), abandoned (never ended)",
    ["result"],
)
FINAL_LATENCY = Histogram(
    "glyphoxa_stt_final_latency_seconds",
    "speech end (capture time) to final transcript published",
    buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
)
EARLY_FINALS = Counter(
    "glyphoxa_stt_early_finals",
    "final transcripts published at a streaming provider's endpoint, before vad's end")
PAUSE_TRANSCRIPTIONS = Counter(
    "glyphoxa_stt_pause_transcriptions",
    "transcriptions started at vad's pause (started), and at the end whether the utterance "
    "was the same audio and the result was used (used) or it was transcribed again (not_used)",
    ["result"])
