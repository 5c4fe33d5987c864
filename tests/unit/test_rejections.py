"""A flood of bad messages is counted in full but logged only in part, per session and stage."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, Counter

from glyphoxa_bus.session import LOGGED_REJECTIONS, SessionContext
from glyphoxa_events.subjects import SessionSubjects

pytestmark = pytest.mark.unit


def test_rejections_are_all_counted_but_logged_only_at_first_and_then_every_100th(caplog):
    counter = Counter("glyphoxa_test_rejected_messages_total", "test", ["stage", "reason"],
                      registry=CollectorRegistry())
    ctx = SessionContext("tts", SessionSubjects("t1", "s1"), None, None,  # type: ignore[arg-type]
                         metrics_rejected=counter)
    other = SessionContext("tts", SessionSubjects("t1", "s2"), None, None)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="glyphoxa_bus.session"):
        for n in range(300):
            ctx.reject("malformed_control", f"bad event {n}", "glx.t1.s1.ctl.x")
        other.reject("malformed_control", "bad event of another session")
    assert counter.labels(stage="tts", reason="malformed_control")._value.get() == 300
    logged = [r for r in caplog.records if r.session == "s1"]  # type: ignore[attr-defined]
    assert len(logged) == LOGGED_REJECTIONS + 3  # then the 100th, 200th and 300th
    assert [r.rejected_so_far for r in logged[-3:]] == [100, 200, 300]  # type: ignore[attr-defined]
    assert logged[0].getMessage() == "rejected message on glx.t1.s1.ctl.x: bad event 0"
    assert [r.session for r in caplog.records].count("s2") == 1  # type: ignore[attr-defined]
