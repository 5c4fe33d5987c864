#!/usr/bin/env python3
"""Cold start beside a busy core: the example scene through a freshly started stack, with
and without other programs each holding a core.

    .venv/bin/python scripts/bench_busy_core.py [--runs 3] [--busy 0 1] [--speed 1] [--edge loopback]

A GM's machine always runs other programs (Discord, a browser). Each run starts the whole
system afresh (nats-server, PostgreSQL and the six services as processes, npc-brain with an
empty prompt cache and no persona primed), with ``--busy`` processes that spin
(``python3 -c 'while True: pass'``) started before the stack and stopped after the scene,
then plays the example scene (``glyphoxa scene play``, the loopback edge by default: the
players' frames through discord-edge's receive path, the replies played by the edge) at
``--speed``. The conditions alternate run by run (0, 1, 0, 1, ... busy processes), so a
drift of a shared machine's load hits each alike.

Per run: the first addressed line's first LLM token and first audio after its speech end
(the cold start), how many addressed lines were answered (in brackets: of those, replies a
player talked over, which the edge cut and the brain ended as cancelled) and the median
first audio over them, and the CPU seconds each stage used while the scene played (threads
that spin while they wait show up there). A line not answered timed out
(``BRAIN_TURN_TIMEOUT_S``) or failed. The services inherit this process's environment, so
``BRAIN_LLM_THREADS=2 BRAIN_LLM_SPIN=true .venv/bin/python scripts/bench_busy_core.py``
tries other settings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from glyphoxa_cli.stack import Stack, glyphoxa_home
from glyphoxa_npc_brain.models import ensure_default_model

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "examples" / "scenes" / "smithy"
CAMPAIGN = ROOT / "examples" / "campaign.yaml"
GLYPHOXA = str(Path(sys.executable).parent / "glyphoxa")
STAGES = ("vad", "stt", "npc-brain", "tts")


@dataclass
class Run:
    busy: int
    first_token_ms: float | None
    first_audio_ms: float | None
    answered: int
    cut: int
    addressed: int
    first_audio_p50_ms: float | None
    cpu_s: dict[str, float]
    played_s: float
    stt: dict[str, float]


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[name] = (int(fields[11]) + int(fields[12])) / tick
    return used


def stt_numbers(port: int) -> dict[str, float]:
    """stt's transcriptions at vad's pause (started, used) and its mean speech end -> final."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    found = {"started": 0.0, "used": 0.0, "final_s_sum": 0.0, "final_count": 0.0}
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "glyphoxa_stt_pause_transcriptions_total":
                result = sample.labels["result"]
                if result in found:
                    found[result] = sample.value
            elif sample.name == "glyphoxa_stt_final_latency_seconds_sum":
                found["final_s_sum"] = sample.value
            elif sample.name == "glyphoxa_stt_final_latency_seconds_count":
                found["final_count"] = sample.value
    return found


def spinners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def one_run(busy: int, args: argparse.Namespace, model: Path, n: int) -> Run:
    home = Path(tempfile.mkdtemp(prefix="glyphoxa-bench-busy-"))
    home.chmod(0o755)  # as root, PostgreSQL runs as `nobody` and must reach its data
    load = spinners(busy)
    stack = Stack(home / "stack", env={"BRAIN_LLM_MODEL_PATH": str(model)})
    ok = False
    try:
        stack.start(progress=lambda s: None)
        pids = {p.service: p.proc.pid for p in stack.procs if p.proc is not None}
        before = cpu_seconds(pids)
        out = home / "out"
        started = time.monotonic()
        result = subprocess.run(
            [GLYPHOXA, "scene", "play", str(args.scene), "--campaign", str(args.campaign), "--out", str(out),
             "--speed", str(args.speed), "--nats", stack.nats_url or "", "--tenant", f"busy{n}",
             "--timeout", "240", "--edge", args.edge],
            capture_output=True, text=True, env={**os.environ, "GLYPHOXA_HOME": str(stack.home)})
        played_s = time.monotonic() - started
        after = cpu_seconds(pids)
        stt = stt_numbers(stack.by_name("stt-1").metrics_port)
        if result.returncode != 0:
            raise RuntimeError(f"scene play failed:\n{result.stderr[-2000:]}{result.stdout[-2000:]}")
        rows = [json.loads(line) for line in (out / "turns.jsonl").read_text().splitlines()]
        ok = True
    finally:
        stop(load)
        stack.stop()
        if ok and not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"stack home kept in {home}", file=sys.stderr)
    addressed = [r for r in rows if r["expected"] and r["expected"]["addressed"]]
    first = addressed[0]["latency_ms"] if addressed else {}
    audio = [r["latency_ms"]["first_audio"] for r in addressed
             if r["latency_ms"]["first_audio"] is not None]
    return Run(busy, first.get("first_token"), first.get("first_audio"),
               sum(r["outcome"] in ("answered", "cancelled") for r in addressed),
               sum(r["outcome"] == "cancelled" for r in addressed), len(addressed),
               statistics.median(audio) if audio else None,
               {name: after[name] - before.get(name, 0.0) for name in after}, played_s, stt)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def print_table(runs: list[Run]) -> None:
    print("| busy cores | first line: first token / first audio (ms) | answered (cut) | "
          "first audio p50 (ms) | CPU s: " + " / ".join(STAGES) + " | scene s | "
          "stt: speech end -> final, mean (ms); lines transcribed at vad's pause (of started) |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        cpu = " / ".join(f"{r.cpu_s.get(s, 0.0):.1f}" for s in STAGES)
        final = r.stt["final_s_sum"] / r.stt["final_count"] * 1000 if r.stt["final_count"] else None
        print(f"| {r.busy} | {ms(r.first_token_ms)} / {ms(r.first_audio_ms)} | "
              f"{r.answered}/{r.addressed} ({r.cut}) | {ms(r.first_audio_p50_ms)} | {cpu} | "
              f"{r.played_s:.0f} | {ms(final)}; {r.stt['used']:.0f} of {r.stt['started']:.0f} |")
    for busy in sorted({r.busy for r in runs}):
        group = [r for r in runs if r.busy == busy]
        cpu = " / ".join(f"{median([r.cpu_s.get(s) for r in group]) or 0.0:.1f}" for s in STAGES)
        print(f"| **{busy}, median of {len(group)}** | {ms(median([r.first_token_ms for r in group]))}"
              f" / {ms(median([r.first_audio_ms for r in group]))} | "
              f"{sum(r.answered for r in group)}/{sum(r.addressed for r in group)} "
              f"({sum(r.cut for r in group)}) | "
              f"{ms(median([r.first_audio_p50_ms for r in group]))} | {cpu} | "
              f"{median([r.played_s for r in group]) or 0.0:.0f} | |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="runs of each condition")
    p.add_argument("--busy", type=int, nargs="+", default=[0, 1],
                   help="spinning processes beside the stack, one condition each, alternated")
    p.add_argument("--speed", type=float, default=1.0, help="scene pacing (>= 1)")
    p.add_argument("--edge", choices=("player", "loopback"), default="loopback")
    p.add_argument("--keep-home", action="store_true", help="keep each run's stack home and logs")
    p.add_argument("--scene", type=Path, default=SCENE, help="scene directory to play")
    p.add_argument("--campaign", type=Path, default=CAMPAIGN, help="the scene's campaign")
    args = p.parse_args(argv)
    model = ensure_default_model(glyphoxa_home())
    print(f"{os.cpu_count()} cores; the scene {args.scene.name} at speed {args.speed}, {args.edge} edge; "
          f"{args.runs} runs of each of {args.busy} busy cores, alternated", flush=True)
    runs = []
    for _ in range(args.runs):
        for busy in args.busy:
            runs.append(one_run(busy, args, model, len(runs)))
            r = runs[-1]
            print(f"  run {len(runs)}: {busy} busy, first line first audio {ms(r.first_audio_ms)} ms, "
                  f"{r.answered}/{r.addressed} answered", flush=True)
    print_table(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
