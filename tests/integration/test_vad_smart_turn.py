"""vad with ``VAD_SMART_TURN`` on, as a process through its real entry point against a real
nats-server, fed in real time the way discord-edge publishes (packets only while the player
talks): a finished line ends on the model's word well before the long silence, and a line
with a pause mid-sentence stays one utterance. A model file that is not the pinned one stops
vad at start with a clear message."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from nats.js.api import DeliverPolicy

from glyphoxa_audio.wav import read_wav, resample
from glyphoxa_events import headers as H
from glyphoxa_events.models import UtteranceEnded, UtteranceStarted, parse_as
from glyphoxa_events.subjects import SessionSubjects
from glyphoxa_vad.smart_turn import MODEL_FILE
from tests.integration.test_vad_service import (
    FRAME_NS,
    SESSION,
    Edge,
    Seen,
    begin_session,
    discord_packets,
    start_vad,
)
from tests.support.service import metric, wait_for

pytestmark = pytest.mark.integration

CORPUS = Path("/work/shared/corpus")
FINISHED = CORPUS / "lines" / "line_04.wav"  # "Can someone pass me the dice?", speech ends at 1.85 s
PAUSED = Path(__file__).resolve().parents[1] / "data" / "paused_lines"
MAX_SILENCE_MS = 1200
SMART_TURN_ENV = {
    "VAD_SMART_TURN": "true",
    "VAD_SMART_TURN_SILENCE_MS": "200",
    "VAD_SMART_TURN_MAX_SILENCE_MS": str(MAX_SILENCE_MS),
    # one question per pause: a "no" then waits for the long silence (see docs/benchmarks.md
    # for why asking again inside a long pause splits lines)
    "VAD_SMART_TURN_RECHECK_MS": "1000",
}
needs_corpus = pytest.mark.skipif(
    not FINISHED.is_file(), reason=f"the shared speech corpus is not at {CORPUS}")


@pytest.fixture
def subjects(tenant: str) -> SessionSubjects:
    return SessionSubjects(tenant, SESSION)


async def play(edge: Edge, pcm48: np.ndarray, first_seq: int, offset_frames: int) -> int:
    """Publish a track's Discord packets at their capture times, in real time."""
    packets = discord_packets(pcm48)
    for n, (index, packet) in enumerate(packets):
        at_ns = edge.base_ns + (offset_frames + index) * FRAME_NS
        delay = (at_ns + FRAME_NS - time.time_ns()) / 1e9  # sent once the frame is captured
        if delay > 0:
            await asyncio.sleep(delay)
        await edge.frame(first_seq + n, offset_frames + index, packet)
    return first_seq + len(packets)


def ends(seen: Seen) -> list[UtteranceEnded]:
    return [parse_as(UtteranceEnded, body) for _, h, body in seen.msgs if h.get(H.KIND) == "end"]


@needs_corpus
async def test_a_finished_line_ends_early_and_a_paused_line_stays_whole(
        nc, nats_url: str, subjects: SessionSubjects, tmp_path: Path) -> None:
    js = nc.jetstream()
    seen = Seen()
    sub = await js.subscribe(subjects.vad("*"), cb=seen.on_msg, ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    service = start_vad(nats_url, tmp_path / "vad.log", **SMART_TURN_ENV)
    record = next(r for r in json.loads((PAUSED / "lines.json").read_text())
                  if r["file"] == "line_08.wav")  # "So the key opens the door in ... the cellar, right?"
    paused, rate = read_wav(PAUSED / "line_08.wav")
    try:
        service.wait_ready()
        await begin_session(nc, subjects)
        edge = Edge(js, subjects, base_ns=time.time_ns() + 200_000_000)
        finished, _ = read_wav(FINISHED)
        seq = await play(edge, finished, 0, 0)
        await wait_for(lambda: len(ends(seen)) == 1, timeout_s=10)
        second_at = len(finished) // 960 + 100  # 2 s after the first track's end
        await play(edge, resample(paused, rate, 48_000), seq, second_at)
        await wait_for(lambda: len(ends(seen)) == 2, timeout_s=10)

        first, second = ends(seen)
        # the finished line: ended by the model (~0.3-0.4 s after the speech: 200-250 ms of
        # silence, then one model run), before the long silence would have ended it; the
        # bound leaves room for a model run slowed by a busy machine
        assert abs(first.speech_end_ns - (edge.base_ns + 1_850_000_000)) <= 150_000_000
        first_ms = (first.vad_end_ns - first.speech_end_ns) / 1e6
        assert 150 <= first_ms < MAX_SILENCE_MS, first_ms
        # the paused line: one utterance from before the pause to after it, ended by silence
        second_base = edge.base_ns + second_at * FRAME_NS
        assert second.start_ns <= second_base + int(record["speech_start_s"] * 1e9)
        assert abs(second.speech_end_ns - (second_base + int(record["speech_end_s"] * 1e9))) \
            <= 150_000_000
        assert second.audio_ms >= (record["speech_end_s"] - record["speech_start_s"]) * 1000
        assert len([h for _, h, _ in seen.msgs if h.get(H.KIND) == "start"]) == 2
        assert parse_as(UtteranceStarted, seen.msgs[0][2]).utterance_id == first.utterance_id

        port = service.metrics_port
        assert metric(port, "glyphoxa_vad_utterances_total", engine="silero", reason="turn") == 1
        assert metric(port, "glyphoxa_vad_turn_checks_total", result="finished") == 1
        assert metric(port, "glyphoxa_vad_turn_checks_total", result="unfinished") >= 1
        assert metric(port, "glyphoxa_vad_turn_model_seconds_count") >= 2
    finally:
        service.stop()
        await sub.unsubscribe()
    log = [json.loads(line) for line in (tmp_path / "vad.log").read_text().splitlines()
           if line.startswith("{")]
    assert any(r["msg"] == "smart turn model loaded" for r in log)
    reasons = [r["reason"] for r in log if r["msg"] == "utterance ended"]
    assert reasons[0] == "turn" and reasons[1] in ("idle", "silence", "gap")


def test_a_model_file_that_is_not_the_pinned_one_stops_vad(nats_url: str, tmp_path: Path) -> None:
    altered = tmp_path / "smart-turn.onnx"
    shutil.copyfile(MODEL_FILE, altered)
    with altered.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xff\xfe")
    env = {"NATS_URL": nats_url, "NATS_DRAIN_TIMEOUT_S": "1", "PATH": "/usr/bin:/bin",
           "VAD_SMART_TURN": "true", "VAD_SMART_TURN_MODEL": str(altered), "METRICS_PORT": "0"}
    done = subprocess.run([sys.executable, "-m", "glyphoxa_vad"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "VAD_SMART_TURN is on but" in done.stderr and "sha256" in done.stderr
    assert "cannot load the Smart Turn model" in done.stderr
