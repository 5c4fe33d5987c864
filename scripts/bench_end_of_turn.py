#!/usr/bin/env python3
"""End of turn in vad: a fixed silence against the Smart Turn model, both sides measured.

    .venv/bin/python scripts/bench_end_of_turn.py [--fixed MS ...] [--smart SPEC ...] [--json OUT]

SPEC is ``silence_ms:threshold[:recheck_ms]``: ask the model after that much silence, end the
utterance when it answers at least the threshold, ask again every recheck_ms (default
``--recheck-ms``), end at ``--max-silence-ms`` whatever it says.

Every input goes through vad's real segmentation (``SessionVad`` with the Silero engine) as
Discord would deliver it (opus packets only while a player talks, plus five silence frames)
with a tick every 50 ms of the capture clock, as ``serve_session`` runs it; each Smart Turn
question is answered by the real model at once. Inputs:

- complete lines: the 24 lines of the shared corpus (GLYPHOXA_CORPUS, default
  /work/shared/corpus) and every turn of the scenes examples/scenes/smithy and the corpus'
  forge_and_tavern (each player's whole track);
- lines with a pause inside: tests/data/paused_lines (scripts/make_paused_lines.py), 12 lines
  with 300-700 ms of silence mid-sentence.

Per configuration: the end-of-turn delay (labelled speech end -> the utterance's end event,
on the capture clock, plus the model run that decided it) p50/p95/max over the complete
lines, and false cut-offs (a line or turn split into more than one utterance) on each set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from glyphoxa_audio.wav import read_wav, resample  # noqa: E402
from glyphoxa_vad.core import SessionVad  # noqa: E402
from glyphoxa_vad.engines import build_engine  # noqa: E402
from glyphoxa_vad.segmenter import SegmenterConfig, TurnCheck, UtteranceEnd  # noqa: E402
from glyphoxa_vad.smart_turn import SmartTurn  # noqa: E402
from tests.unit.vad.vad_feed import BASE_NS, FakeClock, Feed, discord_packets, run_live  # noqa: E402

CORPUS = Path(os.environ.get("GLYPHOXA_CORPUS", "/work/shared/corpus"))
PAUSED = ROOT / "tests" / "data" / "paused_lines"
SCENES = [ROOT / "examples" / "scenes" / "smithy", CORPUS / "scenes" / "forge_and_tavern"]


@dataclass(frozen=True)
class Turn:
    speaker: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Case:
    """One session's input: tracks (48 kHz mono) per speaker and the labelled turns."""

    name: str
    kind: str  # complete | paused
    tracks: dict[str, np.ndarray]
    turns: list[Turn]


class CachedModel:
    """The model, each distinct question run once (configurations share most questions)."""

    def __init__(self, model: SmartTurn) -> None:
        self.model = model
        self.cache: dict[bytes, tuple[float, float]] = {}
        self.last_s = 0.0

    def probability(self, pcm: np.ndarray) -> float:
        key = hashlib.sha1(pcm.tobytes()).digest()
        if key not in self.cache:
            started = time.perf_counter()
            p = self.model.probability(pcm)
            self.cache[key] = (p, time.perf_counter() - started)
        p, self.last_s = self.cache[key]
        return p

    def run_times_ms(self) -> list[float]:
        return [t * 1000 for _, t in self.cache.values()]


@dataclass
class Result:
    delays_ms: list[float] = field(default_factory=list)
    turns: int = 0
    split: int = 0
    missed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    split_names: list[str] = field(default_factory=list)


def load_cases() -> list[Case]:
    cases = []
    for line in (CORPUS / "lines.jsonl").read_text().splitlines():
        r = json.loads(line)
        pcm, rate = read_wav(CORPUS / r["file"])
        cases.append(Case(r["file"], "complete", {"p": pcm},
                          [Turn("p", r["speech_start_s"], r["speech_end_s"])]))
    for scene in SCENES:
        meta = json.loads((scene / "scene.json").read_text())
        tracks = {p["name"]: read_wav(scene / p["track"])[0] for p in meta["players"]}
        cases.append(Case(scene.name, "complete", tracks,
                          [Turn(t["player"], t["start_s"], t["end_s"]) for t in meta["turns"]]))
    for r in json.loads((PAUSED / "lines.json").read_text()):
        pcm, rate = read_wav(PAUSED / r["file"])
        pcm48 = resample(pcm, rate, 48_000)
        cases.append(Case(f"paused/{r['file']}", "paused", {"p": pcm48},
                          [Turn("p", r["speech_start_s"], r["speech_end_s"])]))
    return cases


def run_case(case: Case, config: SegmenterConfig, engine, model: CachedModel | None,
             result: Result) -> None:
    feed = Feed()
    for speaker, pcm in case.tracks.items():
        feed.add(speaker, discord_packets(pcm), BASE_NS)
    clock = FakeClock()
    vad = SessionVad(config, engine, monotonic_ns=clock, wall_ns=lambda: BASE_NS)
    decided: dict[str, float] = {}  # utterance -> model time of the check that ended it
    ends: list[tuple[int, UtteranceEnd]] = []
    for at, out in run_live(vad, feed.ordered(), clock, model=model):
        if isinstance(out, TurnCheck) and model is not None:
            decided[out.utterance_id] = model.last_s
        if isinstance(out, UtteranceEnd):
            ends.append((at, out))
    per_turn: dict[int, list[tuple[int, UtteranceEnd]]] = {}
    for at, end in ends:
        result.reasons[end.reason] = result.reasons.get(end.reason, 0) + 1
        start_s, stop_s = (end.start_ns - BASE_NS) / 1e9, (end.speech_end_ns - BASE_NS) / 1e9
        best, overlap = None, 0.0
        for i, turn in enumerate(case.turns):
            if turn.speaker != end.speaker:
                continue
            o = min(stop_s, turn.end_s) - max(start_s, turn.start_s)
            if o > overlap:
                best, overlap = i, o
        if best is not None:
            per_turn.setdefault(best, []).append((at, end))
    for i, turn in enumerate(case.turns):
        result.turns += 1
        got = per_turn.get(i, [])
        if not got:
            result.missed += 1
            continue
        if len(got) > 1:
            result.split += 1
            result.split_names.append(f"{case.name}#{i}")
        at, last = max(got, key=lambda g: g[1].speech_end_ns)
        extra = decided.get(last.utterance_id, 0.0) if last.reason == "turn" else 0.0
        result.delays_ms.append((at - BASE_NS) / 1e6 - turn.end_s * 1000 + extra * 1000)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--fixed", type=int, nargs="*", default=[500],
                        help="fixed silences (ms) to compare")
    parser.add_argument("--smart", nargs="*",
                        default=["200:0.5", "200:0.9", "300:0.9", "200:0.5:1000", "400:0.97"],
                        help="Smart Turn variants, silence_ms:threshold[:recheck_ms]")
    parser.add_argument("--max-silence-ms", type=int, default=1200)
    parser.add_argument("--recheck-ms", type=int, default=300)
    parser.add_argument("--show-splits", action="store_true", help="list what each one split")
    args = parser.parse_args()

    engine = build_engine("silero", threads=1)
    model = CachedModel(SmartTurn(threads=1))
    cases = load_cases()
    configs: list[tuple[str, SegmenterConfig]] = [
        (f"fixed {ms} ms", SegmenterConfig(min_silence_ms=ms)) for ms in args.fixed]
    for spec in args.smart:
        silence, threshold, *rest = spec.split(":")
        recheck = int(rest[0]) if rest else args.recheck_ms
        again = f"again every {recheck} ms" if recheck < args.max_silence_ms else "once"
        configs.append((
            f"smart turn: ask at {silence} ms ({again}), end if p >= {threshold}, "
            f"else at {args.max_silence_ms} ms",
            SegmenterConfig(turn_silence_ms=int(silence), turn_max_silence_ms=args.max_silence_ms,
                            turn_recheck_ms=recheck, turn_threshold=float(threshold))))
    rows = []
    for label, config in configs:
        complete, paused = Result(), Result()
        for case in cases:
            run_case(case, config, engine, model if config.turn_silence_ms else None,
                     complete if case.kind == "complete" else paused)
        rows.append({
            "config": label,
            "complete": {"turns": complete.turns, "split": complete.split,
                         "missed": complete.missed, "p50_ms": pct(complete.delays_ms, 50),
                         "p95_ms": pct(complete.delays_ms, 95),
                         "max_ms": max(complete.delays_ms, default=float("nan")),
                         "reasons": complete.reasons},
            "paused": {"turns": paused.turns, "split": paused.split, "missed": paused.missed,
                       "p50_ms": pct(paused.delays_ms, 50), "reasons": paused.reasons},
            "splits": complete.split_names + paused.split_names,
        })
    runs = model.run_times_ms()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores; "
          f"Smart Turn run (features + model, 1 thread): p50 {pct(runs, 50):.0f} ms, "
          f"p95 {pct(runs, 95):.0f} ms over {len(runs)} distinct questions\n")
    print("| end of turn | complete: delay p50 / p95 / max | complete: split / missed | "
          "paused: split (false cut-offs) | paused: delay p50 |")
    print("|---|---|---|---|---|")
    for row in rows:
        c, p = row["complete"], row["paused"]
        print(f"| {row['config']} | {c['p50_ms']:.0f} / {c['p95_ms']:.0f} / {c['max_ms']:.0f} ms | "
              f"{c['split']} / {c['missed']} of {c['turns']} | {p['split']} of {p['turns']} | "
              f"{p['p50_ms']:.0f} ms |")
    print()
    for row in rows:
        print(f"{row['config']}: end reasons complete {row['complete']['reasons']}, "
              f"paused {row['paused']['reasons']}")
        if args.show_splits:
            print(f"    split: {', '.join(row['splits']) or '-'}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "model_runs_ms": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
