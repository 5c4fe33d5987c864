"""``scripts/bench_cloud.py`` (``./task bench-cloud``): the stack on the cloud providers'
fakes, as processes, end to end with tiny settings (no injected latency)."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.conftest import ROOT

NO_LATENCY = ["--deepgram-final-ms", "0", "--gemini-first-token-ms", "0",
              "--gemini-tokens-per-s", "0", "--elevenlabs-model-ms", "0",
              "--elevenlabs-network-ms", "0", "--elevenlabs-chunk-delay-ms", "0"]


def test_bench_cloud_runs_turns_through_deepgram_gemini_and_elevenlabs_fakes():
    result = subprocess.run(
        [sys.executable, "scripts/bench_cloud.py", "--sessions", "1", "--turns", "2",
         "--warmup-turns", "0", *NO_LATENCY],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    row = next(line for line in lines if line.split()[:2] == ["1", "2"]).split()
    p50_from_speech_end, p50_from_utterance_end = float(row[3]), float(row[7])
    # vad's 500 ms silence is inside the first, not the second; instant fakes add little
    assert 500 <= p50_from_speech_end < 2000 and 0 < p50_from_utterance_end < 1500
    assert "2/2 turns answered" in lines[-1]
