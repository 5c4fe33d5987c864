"""The bench's peer (issue 17): the same fake turns through Pipecat, run through its real entry
point in .venv-peer (./task peer-venv), as `glyphoxa bench` runs it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glyphoxa_audio.opus import OpusDecoder
from glyphoxa_cli.bench import peer_python, run_peer_bench
from glyphoxa_npc_brain.llm.base import ChatMessage
from glyphoxa_npc_brain.llm.fake import fake_reply
from glyphoxa_tts.providers.fake import RATE, SECONDS_PER_CHAR

pytestmark = pytest.mark.integration


def test_pipecat_runs_two_sessions_of_two_turns_and_its_frames_are_opus(tmp_path):
    assert peer_python().exists(), f"no Pipecat venv at {peer_python()}: run ./task peer-venv"
    out = run_peer_bench([1, 2], turns=2, pace=0.0, frames_dir=tmp_path)
    assert out["pipecat"] == "1.14.0"
    assert [r["sessions"] for r in out["rows"]] == [1, 2]
    for row in out["rows"]:
        assert row["turns"] == 2 * row["sessions"]
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"] < 2000, row
        assert 0 < row["cpu_share"] < 2.5, row  # the peer process's CPU, in cores
        stt, llm, sentence, audio = row["hops_p50"]
        assert 0 < stt <= llm <= sentence <= audio, row  # the turn went through every stage

    # each session's first reply: our fake's reply in our fake voice, as 20 ms frames of
    # Discord's opus (48 kHz stereo) that libopus decodes
    reply = fake_reply([ChatMessage("user", "hello there")])
    sentences = ["Aye, that I can do.", "The hello, you say?", "Come back at dawn."]
    assert " ".join(sentences) == reply
    expected = sum(int(np.ceil(len(s) * SECONDS_PER_CHAR * RATE / 960)) for s in sentences)
    files = sorted(tmp_path.glob("peer*.json"))
    assert len(files) == 2  # the last run's sessions (2)
    for path in files:
        frames = [bytes.fromhex(h) for h in json.loads(path.read_text())]
        assert abs(len(frames) - expected) <= len(sentences), (len(frames), expected)
        decoder = OpusDecoder(48_000, 2)
        pcm = np.concatenate([decoder.decode(f) for f in frames])
        assert pcm.shape == (len(frames) * 960, 2)
        assert np.abs(pcm[: 48_000 // 2]).max() > 1000  # the tone, not silence
