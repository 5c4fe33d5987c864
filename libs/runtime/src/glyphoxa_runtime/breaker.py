"""A circuit breaker per provider: stop hammering a provider that is down.

closed: calls go through; ``failure_threshold`` retryable failures in a row open it.
open: calls are refused at once (the stage falls back to its next provider) until
``cooldown_s`` has passed. half-open: one trial call goes through; its success closes the
breaker, its failure opens it again for another cooldown. Non-retryable failures (a bad
request) say nothing about the provider's health and do not count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    name: str
    failure_threshold: int = 3
    cooldown_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[str, State], None] = lambda name, state: None
    _state: State = field(default="closed", init=False)
    _failures: int = field(default=0, init=False)
    _opened_at: float = field(default=0.0, init=False)
    _trial_out: bool = field(default=False, init=False)

    @property
    def state(self) -> State:
        if self._state == "open" and self.clock() - self._opened_at >= self.cooldown_s:
            self._set("half_open")
        return self._state

    def allow(self) -> bool:
        """Whether a call may go to the provider now (half-open lets one trial through)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_out:
            self._trial_out = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._trial_out = False
        if self._state != "closed":
            self._set("closed")

    def record_failure(self, retryable: bool = True) -> None:
        self._trial_out = False
        if not retryable:
            return
        self._failures += 1
        if self._state == "half_open" or self._failures >= self.failure_threshold:
            self._opened_at = self.clock()
            self._set("open")

    def _set(self, state: State) -> None:
        self._state = state
        self.on_change(self.name, state)


def reported(gauge: object, logger: logging.Logger, stage: str) -> Callable[[str, State], None]:
    """An ``on_change`` that sets ``gauge{provider}`` (1 open, 0.5 half-open, 0 closed) and
    logs a warning naming the stage's provider and its new state."""

    def changed(name: str, state: State) -> None:
        gauge.labels(provider=name).set(  # type: ignore[attr-defined]
            {"open": 1.0, "half_open": 0.5}.get(state, 0.0))
        logger.warning("%s provider %s circuit breaker %s", stage, name,
                       state.replace("_", "-"), extra={"provider": name, "breaker": state})

    return changed
