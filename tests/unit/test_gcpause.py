"""The garbage collector's pauses are measured, and start-up's objects are frozen out of
later full collections."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from glyphoxa_runtime import gcpause


def _count(generation: str) -> tuple[float, float]:
    """(seconds paused, collections) of a generation so far."""
    labels = {"generation": generation}
    return (REGISTRY.get_sample_value("glyphoxa_gc_pause_seconds_sum", labels) or 0.0,
            REGISTRY.get_sample_value("glyphoxa_gc_pause_seconds_count", labels) or 0.0)


def test_every_collection_is_measured_by_generation():
    gcpause.watch_gc()
    gcpause.watch_gc()  # once per process, however often it is asked
    assert gc.callbacks.count(gcpause._on_gc) == 1
    _, full_before = _count("2")
    _, young_before = _count("0")
    gc.collect(2)
    gc.collect(0)
    paused, full = _count("2")
    assert full == full_before + 1 and paused > 0
    assert _count("0")[1] == young_before + 1


def test_settle_heap_freezes_what_start_up_made():
    kept = [object() for _ in range(1000)]
    try:
        frozen = gcpause.settle_heap()
        assert frozen == gc.get_freeze_count() >= 1000
        tracked = len(gc.get_objects())  # the frozen ones are out of every generation
        assert tracked < frozen
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0 and kept
