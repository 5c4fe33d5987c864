#!/usr/bin/env python3
"""What embedding one player line costs with the local embedder (all-MiniLM-L6-v2 int8 on
onnxruntime, libs/memory): recall embeds the line of every addressed turn on its path.

    .venv/bin/python scripts/bench_embed.py [--lines 200] [--threads 1] [--batch 32]
                                            [--kernels integer float]

1. **One line at a time**, as recall does: ``await embed([line])`` for each of ``--lines``
   player lines of mixed length (a worker thread runs the model, as in the service), after
   a warm-up; p50/p95/max in ms per line, and p50/p95 by the line's length in tokens (the
   model's work grows with it).
2. **In batches** of ``--batch``, as the indexer does: ms per line in a batch (integer
   kernels run each text alone whatever the batch: glyphoxa_memory.local.BATCH).

Each of ``--kernels`` in turn (default both): ``integer``, the service's default (the int8
weights on integer kernels, glyphoxa_memory.integer), and ``float``, the model file as
onnxruntime runs it as shipped (weights multiplied out to fp32 at load).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glyphoxa_memory.local import LocalEmbedder  # noqa: E402

NPCS = ["Greta", "Aldric", "the innkeeper", "Captain Mora", "old Tobin"]
ASKS = [
    "how much for the longsword?",
    "have you seen a hooded stranger pass through here?",
    "do you remember what we promised you about the dragon?",
    "could you sharpen my axe by tomorrow morning?",
    "what do you know about the ruins north of the river?",
    "is the water from the well safe to drink?",
    "we found the amulet you were looking for.",
    "who was the man arguing with you last night?",
    "can we rent two rooms and stable our horses?",
    "tell me again about the lost crown of the old king.",
]
TAILS = [
    "",
    " I'm asking because the road ahead looks dangerous.",
    " Be honest with us, we have paid you well so far and we are running out of time"
    " before the festival begins in the square.",
    " And don't tell the guards.",
]


def player_lines(count: int) -> list[str]:
    """``count`` distinct lines: an NPC's name, a question, sometimes more (8-50 tokens)."""
    combos = itertools.product(TAILS, ASKS, NPCS)
    lines = [f"{npc}, {ask}{tail}" if n % 2 else f"{ask[0].upper()}{ask[1:]}{tail} {npc}?"
             for n, (tail, ask, npc) in enumerate(combos)]
    return lines[:count]


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


async def one_by_one(embedder: LocalEmbedder, lines: list[str]) -> list[float]:
    for line in lines[:20]:  # warm-up: onnxruntime's first runs allocate
        await embedder.embed([line])
    took = []
    for line in lines:
        started = time.perf_counter()
        await embedder.embed([line])
        took.append(time.perf_counter() - started)
    return took


def batched(embedder: LocalEmbedder, lines: list[str], batch: int) -> float:
    started = time.perf_counter()
    for n in range(0, len(lines), batch):
        embedder.embed_sync(lines[n:n + batch])
    return (time.perf_counter() - started) / len(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kernels", nargs="+", choices=["integer", "float"],
                        default=["integer", "float"])
    args = parser.parse_args()
    lines = player_lines(args.lines)
    for kernels in args.kernels:
        await run(lines, args, kernels)


async def run(lines: list[str], args: argparse.Namespace, kernels: str) -> None:
    started = time.perf_counter()
    embedder = LocalEmbedder(threads=args.threads, kernels=kernels)  # type: ignore[arg-type]
    load_s = time.perf_counter() - started
    tokens = [len(e.ids) for e in embedder._tokenizer.encode_batch(lines)]
    print(f"local embedder {embedder.name}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, {args.threads} intra-op thread(s), {kernels} kernels; "
          f"loaded and verified in {load_s * 1000:.0f} ms")
    print(f"{len(lines)} player lines, {min(tokens)}-{max(tokens)} tokens "
          f"(median {statistics.median(tokens):.0f})")
    took = await one_by_one(embedder, lines)
    print(f"one line at a time (recall): p50 {ms(took, 50):.2f} ms  "
          f"p95 {ms(took, 95):.2f} ms  max {max(took) * 1000:.2f} ms  mean {statistics.mean(took) * 1000:.2f} ms per line")
    for label, keep in (("up to 20 tokens", lambda n: n <= 20),
                        ("21-30", lambda n: 20 < n <= 30), ("over 30", lambda n: n > 30)):
        part = [t for t, n in zip(took, tokens) if keep(n)]
        if part:
            print(f"  {label:>15}: {len(part):3d} lines, p50 {ms(part, 50):.2f} ms  "
                  f"p95 {ms(part, 95):.2f} ms")
    per_line = batched(embedder, lines, args.batch)
    print(f"batches of {args.batch} (indexer): {per_line * 1000:.2f} ms per line")
    await embedder.close()


if __name__ == "__main__":
    asyncio.run(main())
