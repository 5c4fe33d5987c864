"""Python's garbage collector on the turn path: how long its pauses are, and a heap that
makes full collections short.

A collection stops the event loop, and a full one walks every object the process holds.
A stage holds tens of thousands of objects from start-up (modules, the SDKs, settings,
models' Python side) that live as long as the process; ``settle_heap`` moves them to the
permanent generation (``gc.freeze``) once start-up is done, so a full collection during
turns walks only what was made since. ``glyphoxa_gc_pause_seconds{generation}`` measures
every collection, start-up ones included.
"""

from __future__ import annotations

import gc
import time

from prometheus_client import Histogram

PAUSE = Histogram(
    "glyphoxa_gc_pause_seconds",
    "how long each garbage collection stopped the process, by generation (2: full)",
    ["generation"], buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1))

_started = [0.0]


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    elif _started[0]:
        PAUSE.labels(generation=str(info.get("generation", -1))).observe(
            time.perf_counter() - _started[0])
        _started[0] = 0.0


def watch_gc() -> None:
    """Measure every collection from now on (once per process)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def settle_heap() -> int:
    """Collect what start-up left behind, then freeze the survivors out of later
    collections; how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
