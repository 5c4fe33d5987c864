"""Helpers for tests that drive a service through its real entry point."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

from glyphoxa_cli.processes import ServiceProcess
from glyphoxa_events.subjects import SessionSubjects


def http_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.read().decode()


def metric(port: int, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples (matching ``labels``) scraped from ``/metrics``."""
    total = 0.0
    for line in http_get(port, "/metrics").splitlines():
        if line.startswith((name + "{", name + " ")) and all(
                f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def wait_for(predicate, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` (sync or async) until it is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if await result if asyncio.iscoroutine(result) else result:
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def holds(service: ServiceProcess, subjects: SessionSubjects) -> bool:
    """Whether a stage replica holds the session's claim (its ``/readyz`` lists it)."""
    try:
        state = json.loads(http_get(service.metrics_port, "/readyz"))
    except OSError:
        return False
    return f"{subjects.tenant}/{subjects.session}" in state.get("sessions", [])
