"""``scripts/bench_bus_costs.py`` (``./task bench-bus-costs``) runs against its own nats-server
and prints a cost for each of its four measurements (the hop four ways)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_bench_bus_costs_measures_publishing_idle_sessions_encoding_and_a_hop() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/bench_bus_costs.py", "--frames", "200", "--sessions", "3",
         "--seconds", "0.5", "--hops", "30"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    published = [(float(a), float(b)) for a, b in
                 re.findall(r"([0-9.]+) ms / ([0-9.]+) ms$", out, re.MULTILINE)]
    assert len(published) == 3, out  # with headers, without, 10 frames a message
    assert all(0 < ms < 50 and 0 <= server_ms < 50 for ms, server_ms in published), out
    encode = [float(x) for x in re.findall(r"([0-9.]+) ms CPU$", out, re.MULTILINE)]
    assert len(encode) == 1 and 0 < encode[0] < 50, out
    cores = [float(x) for x in re.findall(r"([0-9.]+) cores$", out, re.MULTILINE)]
    assert len(cores) == 2 and all(0 <= c < 2 for c in cores), out
    hops = {way: [float(x) for x in q] for way, *q in re.findall(
        r"^   (.+?) +p50 ([0-9.]+)  p90 ([0-9.]+)  p99 ([0-9.]+)$", out, re.MULTILINE)}
    assert set(hops) == {"jetstream, file", "jetstream, memory", "core nats",
                         "no broker, a socket"}, out
    assert all(0 < p50 <= p90 <= p99 < 1000 for p50, p90, p99 in hops.values()), out
    assert "Traceback" not in result.stderr
