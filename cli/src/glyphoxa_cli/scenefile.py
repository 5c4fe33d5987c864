"""Recorded table scenes: per-player 48 kHz tracks on one timeline plus ground truth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glyphoxa_audio.wav import read_wav
from glyphoxa_events.tokens import validate_token


class SceneError(ValueError):
    pass


@dataclass(frozen=True)
class SceneTurn:
    player: str
    start_s: float
    end_s: float
    text: str
    addressed: str | None
    kind: str


@dataclass(frozen=True)
class Scene:
    name: str
    sample_rate: int
    tracks: dict[str, np.ndarray]  # player token -> int16 mono samples
    turns: list[SceneTurn]

    @property
    def duration_s(self) -> float:
        return max(len(t) for t in self.tracks.values()) / self.sample_rate


def load_scene(scene_dir: str | Path) -> Scene:
    scene_dir = Path(scene_dir)
    meta_path = scene_dir / "scene.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SceneError(f"{meta_path}: cannot read scene: {exc}") from exc
    rate = int(meta.get("sample_rate", 0))
    if rate != 48_000:
        raise SceneError(f"{meta_path}: sample_rate must be 48000 (Discord's rate), got {rate}")
    tracks: dict[str, np.ndarray] = {}
    for player in meta.get("players", []):
        token = validate_token(str(player["name"]).lower(), "player")
        pcm, track_rate = read_wav(scene_dir / player["track"])
        if track_rate != rate or pcm.ndim != 1:
            raise SceneError(f"{player['track']}: expected 48 kHz mono, got {track_rate} Hz")
        tracks[token] = pcm
    if not tracks:
        raise SceneError(f"{meta_path}: no players")
    turns = [
        SceneTurn(str(t["player"]).lower(), float(t["start_s"]), float(t["end_s"]), t.get("text", ""),
                  t.get("addressed"), t.get("kind", ""))
        for t in meta.get("turns", [])
    ]
    return Scene(scene_dir.name, rate, tracks, turns)
