"""Helpers for tests that drive a service through its real entry point."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

from nats.js.api import DeliverPolicy

from glyphoxa_bus.heartbeat import read_heartbeats
from glyphoxa_cli.processes import ServiceProcess
from glyphoxa_events import headers as H
from glyphoxa_events.models import Heartbeat, Usage
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


class UsageLog:
    """Every usage event stored for a session (``glx.T.S.usage.*``): (subject, msg id, event)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, Usage]] = []
        self._sub = None

    async def follow(self, js, subjects: SessionSubjects) -> UsageLog:  # type: ignore[no-untyped-def]
        async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
            self.items.append((msg.subject, (msg.headers or {}).get(H.MSG_ID, ""),
                               Usage.model_validate_json(msg.data)))

        self._sub = await js.subscribe(subjects.usage("*"), cb=on_msg, ordered_consumer=True,
                                       deliver_policy=DeliverPolicy.ALL)
        return self

    def of(self, metric: str) -> dict[str, Usage]:
        return {u.key: u for _, _, u in self.items if u.metric == metric}

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


async def heartbeat_of(js, role: str, replica: str) -> Heartbeat | None:  # type: ignore[no-untyped-def]
    """The live heartbeat of one replica, or None."""
    beats = [b for b in await read_heartbeats(js) if (b.role, b.replica) == (role, replica)]
    return beats[0] if beats else None


async def serving(js, role: str, subjects: SessionSubjects) -> bool:  # type: ignore[no-untyped-def]
    """Whether a live heartbeat of ``role`` lists the session."""
    ref = f"{subjects.tenant}.{subjects.session}"
    return any(b.role == role and ref in b.sessions for b in await read_heartbeats(js))


async def lists_the_session(js, role: str, subjects: SessionSubjects,  # type: ignore[no-untyped-def]
                            service: ServiceProcess, within_s: float = 10.0) -> None:
    """A heartbeat of ``service`` (a ``role`` stage) lists the session, within a few puts: a
    claim lost under load (a loop stalled past a test's short lease) is taken again. Failing,
    it says the heartbeats, the stage's claims and the end of its log (a single read once
    failed a fresh-clone CI run with nothing to go on)."""
    try:
        await wait_for(lambda: serving(js, role, subjects), within_s)
    except AssertionError:
        metric_name = f"glyphoxa_{role.replace('-', '_')}_claims_total"
        claims = {r: metric(service.metrics_port, metric_name, result=r)
                  for r in ("taken", "lost", "failed")}
        log = service.log_path.read_text(errors="replace")[-3000:]
        raise AssertionError(f"no {role} heartbeat lists the session: {await read_heartbeats(js)}; "
                             f"claims {claims}; {role} log:\n{log}") from None
