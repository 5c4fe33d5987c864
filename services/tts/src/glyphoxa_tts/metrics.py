"""Prometheus metrics of the tts service (``glyphoxa_tts_<thing>_<unit>``; bounded labels).

Created once per process at import; the registry refuses a second metric of one name.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from glyphoxa_runtime.service import StageMetrics

STAGE = StageMetrics("tts")

SYNTH_SECONDS = Histogram(
    "glyphoxa_tts_synth_seconds",
    "time a provider spent synthesizing one reply chunk (sentence)",
    ["provider"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0),
)
FIRST_AUDIO_SECONDS = Histogram(
    "glyphoxa_tts_first_audio_seconds",
    "from the arrival of a turn's first reply chunk to its first audio frame published",
    buckets=(0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0),
)
SPEECH_TO_FIRST_AUDIO_SECONDS = Histogram(
    "glyphoxa_tts_speech_to_first_audio_seconds",
    "from the end of the player's line (capture time) to its reply's first audio frame "
    "published: the whole pipeline's latency, as docs/benchmarks.md measures it",
    buckets=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 30.0),
)
FRAMES = Counter("glyphoxa_tts_frames_total", "20 ms opus frames published to audio.out")
MESSAGES = Counter("glyphoxa_tts_messages_total",
                   "audio.out messages published (a turn's first frame alone, then up to 10 a message)")
CHARACTERS = Counter(
    "glyphoxa_tts_characters_total", "characters of text synthesized", ["provider"])
AUDIO_SECONDS = Counter(
    "glyphoxa_tts_audio_seconds_total",
    "seconds of audio synthesized (with synth_seconds: the real-time factor)", ["provider"])
PROVIDER_ERRORS = Counter(
    "glyphoxa_tts_provider_errors_total", "failed syntheses", ["provider", "retryable"])
TURNS = Counter(
    "glyphoxa_tts_turns_total", "turns whose audio is done, by outcome", ["outcome"])
SENTENCES_DROPPED = Counter(
    "glyphoxa_tts_sentences_dropped_total",
    "reply chunks not spoken (turn cancelled or already done, provider failed)", ["reason"])
HELD = Counter(
    "glyphoxa_tts_held_total",
    "guessed replies' first sentences synthesized ahead (BRAIN_SPECULATE), by what became of "
    "them: claimed (spoken for the turn), discarded (the guess was wrong) or expired",
    ["result"])

BREAKER_OPEN = Gauge("glyphoxa_tts_provider_breaker_open",
                     "1 while a provider's circuit breaker refuses calls (0 closed, 0.5 half-open)",
                     ["provider"])
