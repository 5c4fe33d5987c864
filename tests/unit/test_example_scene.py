"""scripts/make_example_scene.py writes a scene in the corpus format that fits examples/campaign.yaml."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from glyphoxa_campaign import Campaign, load_campaign_file
from glyphoxa_events.tokens import validate_token

# no servers, but it loads the real Piper voice (a few seconds)
pytestmark = [pytest.mark.unit, pytest.mark.models]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "make_example_scene.py"
SR = 48_000
FRAME = SR // 100
TOL_S = 0.020
KINDS = {"name_start", "name_end", "followup", "table_talk"}


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SR, 1, 2), path.name
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def _segments(pcm: np.ndarray, min_gap_s: float = 0.6) -> list[tuple[float, float]]:
    """Speech regions (s) on a track's own 10 ms grid: frames above -50 dBFS, short gaps merged."""
    frames = len(pcm) // FRAME
    x = pcm[: frames * FRAME].astype(np.float64).reshape(frames, FRAME) / 32768.0
    active = np.nonzero(20 * np.log10(np.maximum(np.sqrt((x**2).mean(axis=1)), 1e-10)) > -50)[0]
    segs: list[list[int]] = []
    for i in active:
        if segs and (i - segs[-1][1]) * 0.01 < min_gap_s:
            segs[-1][1] = i + 1
        else:
            segs.append([i, i + 1])
    return [(a * 0.01, b * 0.01) for a, b in segs]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("scene") / "smithy"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True,
                          timeout=300, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout


@pytest.fixture(scope="module")
def scene(generated: tuple[Path, str]) -> dict[str, Any]:
    return json.loads((generated[0] / "scene.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tracks(generated: tuple[Path, str], scene: dict[str, Any]) -> dict[str, np.ndarray]:
    return {p["name"]: _read_wav(generated[0] / p["track"]) for p in scene["players"]}


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    return load_campaign_file(ROOT / "examples" / "campaign.yaml")


def test_progress_is_printed_per_line(generated: tuple[Path, str], scene: dict[str, Any]) -> None:
    lines = [line for line in generated[1].splitlines() if re.match(r"\[\s*\d+/\d+\]", line)]
    assert len(lines) == len(scene["turns"])


def test_scene_json_format(scene: dict[str, Any], generated: tuple[Path, str]) -> None:
    assert set(scene) == {"sample_rate", "players", "turns"}
    assert scene["sample_rate"] == SR
    names = [p["name"] for p in scene["players"]]
    assert len(names) == len(set(names)) >= 3
    for player in scene["players"]:
        assert set(player) == {"name", "voice", "track"}
        validate_token(player["name"], "player")
        assert player["track"] == f"player_{player['name']}.wav"
        assert (generated[0] / player["track"]).is_file()
    assert len({p["voice"] for p in scene["players"]}) == len(names), "players must sound different"
    assert 8 <= len(scene["turns"]) <= 10
    for turn in scene["turns"]:
        assert set(turn) == {"player", "start_s", "end_s", "text", "addressed", "kind"}
        assert turn["player"] in names and turn["kind"] in KINDS and turn["text"].strip()
        assert 0 < turn["start_s"] < turn["end_s"]


def test_tracks_share_one_timeline(tracks: dict[str, np.ndarray], scene: dict[str, Any]) -> None:
    lengths = {len(t) for t in tracks.values()}
    assert len(lengths) == 1, f"track lengths differ: {lengths}"
    duration = lengths.pop() / SR
    last_end = max(t["end_s"] for t in scene["turns"])
    assert 3.8 <= duration - last_end <= 4.5, "room for the last NPC answer at the end"


def test_turns_are_sorted(scene: dict[str, Any]) -> None:
    starts = [t["start_s"] for t in scene["turns"]]
    assert starts == sorted(starts)
    assert abs(starts[0] - 1.0) <= TOL_S, "1 s lead-in"


def test_speech_bounds_match_the_audio(tracks: dict[str, np.ndarray], scene: dict[str, Any]) -> None:
    for name, pcm in tracks.items():
        turns = [t for t in scene["turns"] if t["player"] == name]
        segs = _segments(pcm)
        assert len(segs) == len(turns), f"{name}: {len(segs)} speech regions for {len(turns)} turns"
        for turn, (start, end) in zip(turns, segs):
            assert abs(turn["start_s"] - start) <= TOL_S, (name, turn, start)
            assert abs(turn["end_s"] - end) <= TOL_S, (name, turn, end)


def test_digital_silence_outside_the_turns(tracks: dict[str, np.ndarray], scene: dict[str, Any]) -> None:
    for name, pcm in tracks.items():
        mask = np.ones(len(pcm), dtype=bool)
        for turn in scene["turns"]:
            if turn["player"] == name:
                mask[int((turn["start_s"] - TOL_S) * SR): int((turn["end_s"] + TOL_S) * SR)] = False
        assert not pcm[mask].any(), f"{name}: non-zero samples outside its turns"
        peak_db = 20 * np.log10(np.abs(pcm.astype(np.int32)).max() / 32768)
        assert -4.0 <= peak_db <= -2.5, f"{name}: peak {peak_db:.1f} dBFS, expected about -3"


def test_turn_kinds_and_addressees(scene: dict[str, Any], campaign: Campaign) -> None:
    npcs = {npc.name: npc for npc in campaign.npcs}
    turns = scene["turns"]
    last_npc = last_namer = None
    kinds: dict[str, int] = {}
    for turn in turns:
        kinds[turn["kind"]] = kinds.get(turn["kind"], 0) + 1
        addressed, text = turn["addressed"], turn["text"]
        if turn["kind"] == "table_talk":
            assert addressed is None, turn
            continue
        assert addressed in npcs, f"{addressed!r} is not an NPC of examples/campaign.yaml"
        names = npcs[addressed].names
        if turn["kind"] == "name_start":
            assert any(text.startswith(n) for n in names), turn
            last_npc, last_namer = addressed, turn["player"]
        elif turn["kind"] == "name_end":
            assert any(re.search(rf"{re.escape(n)}\W*$", text) for n in names), turn
            last_npc, last_namer = addressed, turn["player"]
        else:  # followup: the NPC addressed most recently, asked by someone else
            assert addressed == last_npc, turn
            assert turn["player"] != last_namer, "a followup comes from a different player"
            assert not any(n.lower() in text.lower() for n in names), turn
    assert kinds.keys() == KINDS, kinds
    every_name = [n for npc in campaign.npcs for n in npc.names]
    mentions = [t for t in turns if t["kind"] == "table_talk" and any(n in t["text"] for n in every_name)]
    assert mentions, "one table-talk turn mentions an NPC in the third person"


def test_timeline_gaps_and_one_overlap(scene: dict[str, Any]) -> None:
    turns = scene["turns"]
    overlaps = 0
    for prev, turn in itertools.pairwise(turns):
        gap = turn["start_s"] - prev["end_s"]
        if gap < 0:
            overlaps += 1
            assert abs(gap + 0.5) <= TOL_S, (prev, turn)
            assert prev["player"] != turn["player"]
        elif prev["addressed"] is not None:
            assert 3.8 - TOL_S <= gap <= 4.3 + TOL_S, (prev, turn, gap)
        else:
            assert 1.5 - TOL_S <= gap <= 3.0 + TOL_S, (prev, turn, gap)
    assert overlaps == 1


def test_the_scene_loader_reads_it(generated: tuple[Path, str], scene: dict[str, Any]) -> None:
    from glyphoxa_cli.scenefile import load_scene

    loaded = load_scene(generated[0])
    assert loaded.sample_rate == SR and len(loaded.turns) == len(scene["turns"])
    assert set(loaded.tracks) == {p["name"] for p in scene["players"]}


def test_same_seed_same_scene(generated: tuple[Path, str], tmp_path: Path) -> None:
    again = tmp_path / "again"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(again)], capture_output=True, text=True,
                          timeout=300, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    first = json.loads((generated[0] / "scene.json").read_text())
    second = json.loads((again / "scene.json").read_text())
    for a, b in zip(first["turns"], second["turns"], strict=True):
        assert abs(a["start_s"] - b["start_s"]) <= TOL_S and abs(a["end_s"] - b["end_s"]) <= TOL_S
