#!/usr/bin/env python3
"""Synthesize lines with a pause inside them, the false cut-off test corpus of vad's end of turn.

    .venv/bin/python scripts/make_paused_lines.py tests/data/paused_lines

A player who hesitates mid-sentence ("Greta, how much for the ... longsword?") must still
give one utterance. Each line is synthesised whole with Piper (the en_US-joe-medium voice at
the pitches of the example scene, ``make_example_scene.Synth``), so the words before the
pause keep the prosody of a sentence that goes on, and is cut where the first half ends: the
first half is synthesised alone to learn its length L, and the cut is the quietest 20 ms of
the whole line between 0.7 L and 1.05 L (a word boundary; this Piper voice gives no
alignments). 300-700 ms of digital silence go in at the cut (as Discord delivers a pause: no
packets). Synthesising the halves separately instead would end the first half with a
sentence-final fall, which is not what a hesitation sounds like.

The cut is approximate: transcribing the halves with the local Whisper (tiny.en), 3 of
the 12 are cut at the intended boundary, 5 at another word boundary (one or two words early
or late: "Greta, I need a new blade, | something light and quick."), 4 inside a word
("anything", "where", "my", "and"). Every pause is inside the sentence, which is what the
corpus is for; ``text`` is the intended split. (Cutting at Whisper's word timestamps was
tried and was no better.)

Writes OUT_DIR/line_NN.wav (16 kHz mono PCM16, 0.3 s of silence before and 1.5 s after) and
OUT_DIR/lines.json: [{"file", "text", "pitch", "pause_ms", "speech_start_s",
"pause_start_s", "pause_end_s", "speech_end_s"}, ...], times in the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import wave
from pathlib import Path

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).parent))
from make_example_scene import DEFAULT_SEED, SR, Synth  # noqa: E402

RATE = 16_000
LEAD_S = 0.3
TAIL_S = 1.5

# (first half, second half, pitch, pause in ms)
LINES = [
    ("Greta, how much for the", "longsword?", 1.0, 500),
    ("Aldric, could you tell me where", "the old mill is?", 1.15, 400),
    ("I think we should", "wait for the others before we go in.", 0.85, 600),
    ("Mirela, do you have anything for", "a bad cough?", 1.0, 700),
    ("Captain Voss, we saw three men near the", "east gate last night.", 1.15, 450),
    ("Bruno, can you fix my", "shield before tomorrow?", 0.85, 350),
    ("Tobias, we would like two rooms and", "a hot meal, please.", 1.0, 550),
    ("So the key opens the door in", "the cellar, right?", 1.15, 650),
    ("Greta, I need a new blade, something", "light and quick.", 0.85, 300),
    ("Let's ask the innkeeper about the", "missing caravan.", 1.0, 600),
    ("Aldric, how long have you been running", "this place?", 0.85, 500),
    ("Could you sell us some rope and", "a lantern?", 1.15, 400),
]


def write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


def to_16k(pcm48: np.ndarray) -> np.ndarray:
    audio = soxr.resample(pcm48.astype(np.float64) / 32768.0, SR, RATE, quality="VHQ")
    return np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)


def quietest_cut(pcm: np.ndarray, first_len: int) -> int:
    """The start of the quietest 20 ms window (10 ms steps) between 0.7 and 1.05 x first_len."""
    win, step = RATE // 50, RATE // 100
    lo, hi = int(first_len * 0.7), min(int(first_len * 1.05), len(pcm) - win)
    starts = np.arange(lo, hi, step)
    x = pcm.astype(np.float64)
    energy = [float(np.mean(x[s: s + win] ** 2)) for s in starts]
    return int(starts[int(np.argmin(energy))] + win // 2)


def build(out_dir: Path, seed: int = DEFAULT_SEED) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    synth = Synth(seed)
    records = []
    for i, (first, second, pitch, pause_ms) in enumerate(LINES, 1):
        whole = to_16k(synth.speech(f"{first} {second}", pitch))
        cut = quietest_cut(whole, len(to_16k(synth.speech(first, pitch))))
        a, b = whole[:cut], whole[cut:]
        lead, pause = np.zeros(int(LEAD_S * RATE), np.int16), np.zeros(pause_ms * RATE // 1000, np.int16)
        pcm = np.concatenate((lead, a, pause, b, np.zeros(int(TAIL_S * RATE), np.int16)))
        name = f"line_{i:02d}.wav"
        write_wav(out_dir / name, pcm)
        records.append({
            "file": name, "text": f"{first} ... {second}", "pitch": pitch, "pause_ms": pause_ms,
            "speech_start_s": LEAD_S,
            "pause_start_s": round(LEAD_S + len(a) / RATE, 4),
            "pause_end_s": round(LEAD_S + (len(a) + len(pause)) / RATE, 4),
            "speech_end_s": round(LEAD_S + (len(a) + len(pause) + len(b)) / RATE, 4),
        })
        print(f"{name}: {records[-1]['text']!r} pause {pause_ms} ms")
    (out_dir / "lines.json").write_text(json.dumps(records, indent=1) + "\n")
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    build(args.out_dir, args.seed)


if __name__ == "__main__":
    main()
