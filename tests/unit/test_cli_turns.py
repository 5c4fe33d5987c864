"""``glyphoxa turns``: a scene's turns as a table, from the file or the directory the scene
player wrote it to; anything else is a one-line error, not a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TURN = {"utterance": "drew-1", "player": "drew", "transcript": "Bruno, can you fix my sword?",
        "npc": "Bruno", "outcome": "answered", "reason": "named at the start: 'Bruno'",
        "reply": "Certainly.", "routing": {"kind": "name_start", "why": "named at the start"},
        "latency_ms": {"stt_final": 701.9, "first_token": 1028.0, "first_sentence": 1126.0,
                       "first_audio": 1196.9}}


def turns(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "glyphoxa_cli.main", "turns", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_turns_reads_the_file_or_the_directory_the_scene_player_wrote(tmp_path: Path) -> None:
    (tmp_path / "turns.jsonl").write_text(json.dumps(TURN) + "\n\n")
    for path in (tmp_path / "turns.jsonl", tmp_path):
        result = turns(path)
        assert result.returncode == 0, result.stderr
        row = result.stdout.splitlines()[2]
        assert row.split()[:3] == ["drew", "Bruno", "answered"]
        assert "702" in row and "1197" in row and "-> Certainly." in row


@pytest.mark.parametrize(("content", "says"), [
    (None, "no {path}: give a turns.jsonl or the directory `glyphoxa scene play` wrote"),
    ('{"player": "drew"', "{path}, line 1: not JSON (Expecting ',' delimiter)"),
    (json.dumps(TURN) + "\n" + json.dumps({"player": "drew"}),
     "{path}, line 2: not a turn (no latency_ms, npc, outcome, reply, transcript)"),
    ("[1, 2]", "{path}, line 1: not a turn (no latency_ms, npc, outcome, player, reply, "
     "transcript)"),
    (json.dumps({**TURN, "latency_ms": None}),
     "{path}, line 1: latency_ms must be an object of milliseconds (numbers or null)"),
    (json.dumps({**TURN, "latency_ms": {"stt_final": "fast"}}),
     "{path}, line 1: latency_ms must be an object of milliseconds (numbers or null)"),
])
def test_what_is_not_a_turns_file_gets_one_clear_line(tmp_path: Path, content: str | None,
                                                       says: str) -> None:
    path = tmp_path / "turns.jsonl"
    if content is not None:
        path.write_text(content)
    result = turns(path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["glyphoxa: error: " + says.format(path=path)]
