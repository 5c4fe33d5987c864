"""Each turn is one trace across the services (docs/tracing.md).

The stack runs as processes (vad with Silero, the instant fakes for stt, the LLM and tts)
with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a local OTLP/HTTP receiver
(``tests/support/otlp.py``); ``glyphoxa scene play --edge loopback`` plays the first 29 s
of the example scene (six lines, three addressed to an NPC) through discord-edge's
playback, exporting its spans too. Then, for every turn in turns.jsonl:

- all its spans are in one trace, and that trace is about this turn only;
- an answered turn's trace has a span from every stage, each the child of the one before:
  vad's end of utterance (the root) -> stt's final -> npc-brain's turn -> its routing, LLM
  first token and LLM stream, and tts's synthesis of each sentence -> the edge's playback
  (a child of the first sentence's synthesis, whose frames it played);
- tenant, session, turn, NPC (and speaker) are attributes of the spans;
- the timings are the turn's: vad's end, stt's final, the first token, the first sentence
  and the first audio, measured from the speech end (the root span's start), are the
  latencies of turns.jsonl. Both come from the same clock readings (the spans are made with
  the times the stages put in their events), so they agree to turns.jsonl's rounding
  (0.1 ms); ``TOLERANCE_MS`` allows 1 ms.
- a line nobody was addressed in ends at npc-brain: vad, stt, turn and routing spans only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glyphoxa_audio.wav import read_wav, write_wav
from glyphoxa_cli.stack import STAGE_SERVICES, Stack
from tests.e2e.conftest import EXAMPLE_CAMPAIGN, EXAMPLE_SCENE
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.pg import fresh_database

GLYPHOXA = str(Path(sys.executable).parent / "glyphoxa")
CUT_S = 29.0
TOLERANCE_MS = 1.0
STAGES = {"vad", "stt", "npc-brain", "tts", "scene-player"}


def cut_scene(out: Path) -> list[str]:
    """The example scene's first ``CUT_S`` seconds as a scene directory; its lines in order."""
    meta = json.loads((EXAMPLE_SCENE / "scene.json").read_text())
    out.mkdir(parents=True)
    for player in meta["players"]:
        pcm, rate = read_wav(EXAMPLE_SCENE / player["track"])
        write_wav(out / player["track"], pcm[:int(CUT_S * rate)], rate)
    meta["turns"] = [t for t in meta["turns"] if t["end_s"] < CUT_S - 1]
    (out / "scene.json").write_text(json.dumps(meta))
    return [t["text"] for t in sorted(meta["turns"], key=lambda t: t["start_s"])]


@pytest.fixture(scope="module")
def receiver():
    with OtlpReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def played(tmp_path_factory, pg_admin_dsn, receiver):
    """(turns.jsonl rows, the scene's lines) of one traced scene through a traced stack."""
    home = tmp_path_factory.mktemp("trace-stack")
    scene = cut_scene(home / "scene")
    script = home / "stt-script.json"
    script.write_text(json.dumps(scene))
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    stack = Stack(home / "stack", pg_dsn=fresh_database(pg_admin_dsn),
                  services=("session-control", *STAGE_SERVICES),
                  env={"STT_PROVIDER": "fake", "STT_FAKE_SCRIPT": str(script),
                       "BRAIN_LLM_PROVIDER": "fake", "TTS_PROVIDER": "fake",
                       "SESSION_CONTROL_ALLOW_FAKE_PROVIDERS": "true", **otel})
    stack.start(progress=lambda m: None)
    try:
        out = home / "out"
        result = subprocess.run(
            [GLYPHOXA, "scene", "play", str(home / "scene"), "--campaign", str(EXAMPLE_CAMPAIGN),
             "--out", str(out), "--speed", "1", "--nats", stack.nats_url, "--tenant", "e2e-trace",
             "--timeout", "90", "--edge", "loopback"],
            capture_output=True, text=True, timeout=180,
            env={**os.environ, "GLYPHOXA_HOME": str(stack.home), **otel})
        assert result.returncode == 0, result.stderr + result.stdout
        rows = [json.loads(line) for line in (out / "turns.jsonl").read_text().splitlines()]
        wait_for_spans(receiver, rows)
    finally:
        stack.stop()
    return rows, scene


def spans_of(receiver: OtlpReceiver, turn: str) -> list[ReceivedSpan]:
    return [s for spans in receiver.traces().values() for s in spans if s.attr("turn") == turn]


def wait_for_spans(receiver: OtlpReceiver, rows: list[dict], timeout_s: float = 15.0) -> None:
    """Until every answered turn's playback and every turn's brain span came in (the
    exporters send in batches every 200 ms here)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        names = {(s.attr("turn"), s.name) for spans in receiver.traces().values() for s in spans}
        if all((r["utterance"], "npc-brain: turn") in names and (
                r["outcome"] != "answered" or (r["utterance"], "edge: playback") in names)
               for r in rows):
            return
        time.sleep(0.2)


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def event_at(span: ReceivedSpan, name: str) -> int:
    found = [e.at_ns for e in span.events if e.name == name]
    assert len(found) == 1, (span.name, name, span.events)
    return found[0]


def after_ms(ns: int, origin_ns: int) -> float:
    return (ns - origin_ns) / 1e6


def test_each_turn_is_one_trace_through_every_stage(played, receiver):
    rows, scene = played
    assert not receiver.refused
    assert [r["transcript"] for r in rows] == scene, "one turn per line of the scene"
    answered = [r for r in rows if r["outcome"] == "answered"]
    assert len(answered) == 3 and len(rows) == 6, [(r["transcript"], r["outcome"]) for r in rows]
    traces = receiver.traces()
    sessions = set()
    for row in rows:
        turn = row["utterance"]
        spans = spans_of(receiver, turn)
        assert len({s.trace_id for s in spans}) == 1, f"{turn}: spans in more than one trace"
        trace = traces[spans[0].trace_id]
        assert {s.attr("turn") for s in trace} == {turn}, "a trace is about one turn"
        for span in trace:
            assert span.attr("tenant") == "e2e-trace", span
            sessions.add(span.attr("session"))

        vad = one(trace, "vad: end of utterance")
        stt = one(trace, "stt: final")
        brain = one(trace, "npc-brain: turn")
        routing = one(trace, "npc-brain: routing")
        assert vad.parent_id == "" and vad.service == "vad"
        assert stt.parent_id == vad.span_id and stt.service == "stt"
        assert brain.parent_id == stt.span_id and brain.service == "npc-brain"
        assert routing.parent_id == brain.span_id
        assert vad.attr("speaker") == stt.attr("speaker") == brain.attr("speaker") == row["player"]
        assert brain.attr("outcome") == row["outcome"]
        assert vad.end_ns <= stt.start_ns <= stt.end_ns <= brain.start_ns <= routing.end_ns

        latency = row["latency_ms"]
        speech_end = vad.start_ns
        assert after_ms(vad.end_ns, speech_end) == pytest.approx(latency["vad_end"],
                                                                 abs=TOLERANCE_MS)
        assert after_ms(stt.end_ns, speech_end) == pytest.approx(latency["stt_final"],
                                                                 abs=TOLERANCE_MS)
        if row["outcome"] != "answered":
            assert {s.name for s in trace} == {vad.name, stt.name, brain.name, routing.name}
            continue

        npc = routing.attr("npc")
        assert npc and row["npc"] and brain.attr("npc") == npc
        first_token = one(trace, "npc-brain: llm first token")
        stream = one(trace, "npc-brain: llm stream")
        sentences = sorted((s for s in trace if s.name == "tts: sentence"),
                           key=lambda s: s.attr("index"))  # type: ignore[arg-type, return-value]
        playback = one(trace, "edge: playback")
        assert first_token.parent_id == stream.parent_id == brain.span_id
        assert sentences and all(s.parent_id == brain.span_id and s.service == "tts"
                                 and s.attr("npc") == npc for s in sentences)
        assert [s.attr("index") for s in sentences] == list(range(len(sentences)))
        assert playback.parent_id == sentences[0].span_id
        assert playback.service == "scene-player" and playback.attr("npc") == npc
        # a long reply may be cut by the next player's line (a barge-in): it was still played
        assert playback.attr("frames") > 0 and (playback.attr("complete") is True
                                                or playback.attr("reason") == "bargein")
        assert {s.service for s in trace} == STAGES

        first_sentence = event_at(brain, "first sentence")
        first_audio = event_at(sentences[0], "first audio")
        assert routing.end_ns <= stream.start_ns == first_token.start_ns
        assert first_token.end_ns <= first_sentence <= sentences[0].start_ns <= first_audio
        assert first_audio <= playback.start_ns < playback.end_ns
        for key, ns in (("first_token", first_token.end_ns),
                        ("first_sentence", first_sentence), ("first_audio", first_audio)):
            assert after_ms(ns, speech_end) == pytest.approx(latency[key], abs=TOLERANCE_MS), key
    assert len(sessions) == 1
