"""``glyphoxa up`` keeps the stack running: whatever dies is started again.

A stage, edge or session-control process, nats-server or PostgreSQL that exits is
started again with the same port, store and settings after a pause that grows with each
quick failure (1 s, 2 s, 4 s ... 30 s; back to 1 s once it has stayed up for a minute),
with a line saying so. Sessions survive it: stages hand over by claims, and a restarted
nats-server or PostgreSQL keeps its data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from glyphoxa_cli.stack import Stack

BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
STABLE_AFTER_S = 60.0


@dataclass
class Child:
    name: str
    exit_code: Callable[[], int | None]  # None while it runs (polling reaps a dead child)
    start: Callable[[], object]
    log: str
    failures: int = 0
    up_since: float = 0.0
    restart_at: float | None = None


class Supervisor:
    def __init__(self, stack: Stack, say: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic):
        self._stack, self._say, self._clock = stack, say, clock
        self.children = self._children()
        self.restarts = 0

    def _children(self) -> list[Child]:
        stack, now = self._stack, self._clock()
        out: list[Child] = []
        if stack.nats is not None:
            nats = stack.nats
            out.append(Child("nats-server", lambda: _code(nats.proc), nats.start,
                             str(nats.log_path), up_since=now))
        if stack.postgres is not None:
            pg = stack.postgres
            out.append(Child("postgres", lambda: _code(pg.proc), pg.start, str(pg.log_path),
                             up_since=now))
        for proc in stack.procs:
            out.append(Child(proc.name, lambda p=proc: _code(p.proc), proc.start,
                             str(proc.log_path), up_since=now))
        return out

    def check(self) -> None:
        """Look at every child once: note the dead, start those whose pause is over."""
        for child in self.children:
            now = self._clock()
            if child.restart_at is None:
                code = child.exit_code()
                if code is None:
                    if now - child.up_since >= STABLE_AFTER_S:
                        child.failures = 0
                    continue
                pause = BACKOFF_S[min(child.failures, len(BACKOFF_S) - 1)]
                child.failures += 1
                child.restart_at = now + pause
                self._say(f"{child.name} exited with {code}; starting it again in {pause:.0f} s "
                          f"(restart {child.failures}; log {child.log})")
            elif now >= child.restart_at:
                self._restart(child)

    def _restart(self, child: Child) -> None:
        try:
            child.start()
        except Exception as exc:  # noqa: BLE001  (it failed to come up: try again later)
            pause = BACKOFF_S[min(child.failures, len(BACKOFF_S) - 1)]
            child.failures += 1
            child.restart_at = self._clock() + pause
            self._say(f"{child.name} did not start again ({exc}); next try in {pause:.0f} s")
            return
        child.restart_at = None
        child.up_since = self._clock()
        self.restarts += 1
        self._stack.write_state()
        self._say(f"{child.name} started again")


def _code(proc) -> int | None:  # type: ignore[no-untyped-def]
    return None if proc is None else proc.poll()
