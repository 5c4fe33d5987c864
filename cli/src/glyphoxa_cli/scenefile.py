"""Recorded table scenes: per-player 48 kHz tracks on one timeline plus ground truth."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from glyphoxa_audio.wav import read_wav
from glyphoxa_campaign.loader import dotted
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


class _Player(BaseModel):
    name: str
    track: str


class _Turn(BaseModel):
    player: str
    start_s: float
    end_s: float
    text: str = ""
    addressed: str | None = None
    kind: str = ""


class _SceneFile(BaseModel):
    """scene.json: what the player reads of it (other keys are the corpus's own)."""

    model_config = ConfigDict(extra="ignore")
    sample_rate: int = 0
    players: list[_Player] = []
    turns: list[_Turn] = []


def _problems(exc: ValidationError) -> str:
    """``players[0].track: Field required`` for each problem (the first three)."""
    out = []
    for error in exc.errors()[:3]:
        where = dotted(tuple(error["loc"]))
        out.append(f"{where}: {error['msg']}" if where else error["msg"])
    more = len(exc.errors()) - len(out)
    return "; ".join(out) + (f" (and {more} more)" if more > 0 else "")


def load_scene(scene_dir: str | Path) -> Scene:
    scene_dir = Path(scene_dir)
    meta_path = scene_dir / "scene.json"
    try:
        meta = _SceneFile.model_validate_json(meta_path.read_bytes())
    except OSError as exc:
        raise SceneError(f"{meta_path}: cannot read scene: {exc.strerror or exc}") from None
    except ValidationError as exc:
        raise SceneError(f"{meta_path}: not a scene: {_problems(exc)}") from None
    rate = meta.sample_rate
    if rate != 48_000:
        raise SceneError(f"{meta_path}: sample_rate must be 48000 (Discord's rate), got {rate}")
    tracks: dict[str, np.ndarray] = {}
    for player in meta.players:
        try:
            token = validate_token(player.name.lower(), "player")
        except ValueError as exc:
            raise SceneError(f"{meta_path}: {exc}") from None
        path = scene_dir / player.track
        try:
            pcm, track_rate = read_wav(path)
        except (OSError, EOFError, wave.Error) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or "not a WAV file"
            raise SceneError(f"{path}: cannot read {player.name}'s track: {reason}") from None
        if track_rate != rate or pcm.ndim != 1:
            channels = 1 if pcm.ndim == 1 else pcm.shape[1]
            raise SceneError(f"{path}: expected 48 kHz mono, got {track_rate} Hz with "
                             f"{channels} channel{'s' if channels != 1 else ''}")
        tracks[token] = pcm
    if not tracks:
        raise SceneError(f"{meta_path}: no players")
    turns = [SceneTurn(t.player.lower(), t.start_s, t.end_s, t.text, t.addressed, t.kind)
             for t in meta.turns]
    return Scene(scene_dir.name, rate, tracks, turns)
