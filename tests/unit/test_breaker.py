"""The circuit breaker: opens after repeated retryable failures, lets one trial through
after the cooldown, closes on its success."""

from __future__ import annotations

import pytest

from glyphoxa_runtime.breaker import CircuitBreaker

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_the_threshold_and_refuses_until_the_cooldown():
    clock, changes = Clock(), []
    breaker = CircuitBreaker("gemini", failure_threshold=3, cooldown_s=10, clock=clock,
                             on_change=lambda name, state: changes.append((name, state)))
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()  # the one trial call
    assert not breaker.allow()  # ... and only one
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()
    assert changes == [("gemini", "open"), ("gemini", "half_open"), ("gemini", "closed")]


def test_a_failed_trial_opens_it_again_for_a_whole_cooldown():
    clock = Clock()
    breaker = CircuitBreaker("tts", failure_threshold=1, cooldown_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 4.9
    assert not breaker.allow()


def test_non_retryable_failures_and_successes_do_not_open_it():
    breaker = CircuitBreaker("stt", failure_threshold=2)
    breaker.record_failure()
    breaker.record_success()  # resets the run of failures
    breaker.record_failure()
    for _ in range(5):
        breaker.record_failure(retryable=False)  # a bad request is not an outage
    assert breaker.state == "closed"
