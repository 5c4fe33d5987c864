"""The gauges behind the dashboard's health and retention panels and the alerts on them:
readiness and dependencies (every service), live replicas (session-control's heartbeats),
the stream watch's reading of JetStream's answer, and the retention settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from glyphoxa_bus.connection import BusSettings
from glyphoxa_bus.streams import CONTROL, EVENTS, MEDIA, WORK, stream_configs
from glyphoxa_events.models import Heartbeat
from glyphoxa_runtime.health_metrics import export_readiness
from glyphoxa_session_control.liveness import count_replicas
from glyphoxa_session_control.metrics import REPLICA_CAPACITY, REPLICAS
from glyphoxa_session_control.streamwatch import oldest_age_s

pytestmark = pytest.mark.unit


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_readiness_and_dependencies_as_gauges():
    registry = CollectorRegistry()
    state = {"ready": True, "nats": True, "postgres": True}
    unexport = export_readiness("session-control", lambda: dict(state), registry)
    assert _value(registry, "glyphoxa_service_ready", service="session-control") == 1
    assert _value(registry, "glyphoxa_service_dependency_up", service="session-control",
                  dependency="postgres") == 1
    state.update(ready=False, postgres=False)  # read at scrape time, not cached
    assert _value(registry, "glyphoxa_service_ready", service="session-control") == 0
    assert _value(registry, "glyphoxa_service_dependency_up", service="session-control",
                  dependency="postgres") == 0
    assert _value(registry, "glyphoxa_service_dependency_up", service="session-control",
                  dependency="nats") == 1
    unexport()
    assert b"glyphoxa_service_ready" not in generate_latest(registry)


def test_a_stage_has_no_postgres_and_a_failing_readiness_reads_as_not_ready():
    registry = CollectorRegistry()
    export_readiness("tts", lambda: {"ready": True, "nats": False}, registry)
    assert _value(registry, "glyphoxa_service_dependency_up", service="tts", dependency="nats") == 0
    assert _value(registry, "glyphoxa_service_dependency_up", service="tts",
                  dependency="postgres") is None

    def broken() -> dict[str, object]:
        raise RuntimeError("app state unreadable")

    registry = CollectorRegistry()
    export_readiness("vad", broken, registry)
    assert _value(registry, "glyphoxa_service_ready", service="vad") == 0  # the scrape works


def _beat(role: str, replica: str, capacity: int) -> Heartbeat:
    return Heartbeat(role=role, replica=replica, sessions=[], capacity=capacity, at_ns=1,
                     started_ns=1)


def test_live_replicas_and_capacity_per_role_from_heartbeats():
    count_replicas([_beat("stt", "stt-a", 32), _beat("stt", "stt-b", 32), _beat("edge", "e", 0),
                    _beat("vad", "vad-a", 24)])
    assert REPLICAS.labels(role="stt")._value.get() == 2
    assert REPLICA_CAPACITY.labels(role="stt")._value.get() == 64
    assert REPLICAS.labels(role="edge")._value.get() == 1
    assert REPLICAS.labels(role="tts")._value.get() == 0  # a role without beats reads 0
    count_replicas([])
    assert REPLICAS.labels(role="stt")._value.get() == 0


def test_oldest_age_from_jetstreams_nanosecond_timestamps():
    start = datetime(2026, 12, 3, 21, 0, 0, tzinfo=UTC).timestamp()
    state = {"messages": 4, "first_ts": "2026-12-03T21:00:00.250000123Z"}
    assert oldest_age_s(state, start + 90.75) == pytest.approx(90.5, abs=1e-6)
    assert oldest_age_s({"messages": 1, "first_ts": "2026-12-03T21:00:00Z"}, start + 60) == 60
    assert oldest_age_s({"messages": 0, "first_ts": "0001-01-01T00:00:00Z"}, start) == 0


def test_retention_is_configured_by_environment(monkeypatch):
    monkeypatch.setenv("NATS_STREAM_MAX_AGE_S", str(7 * 24 * 3600))
    monkeypatch.setenv("NATS_STREAM_MAX_BYTES", str(20 * 1024**3))
    configs = {c.name: c for c in stream_configs(BusSettings().stream_settings())}
    for name in (MEDIA, EVENTS, CONTROL):
        assert configs[name].max_age == 7 * 24 * 3600
        assert configs[name].max_bytes == 20 * 1024**3
        assert configs[name].duplicate_window == 120
    assert configs[WORK].max_age is None  # claims live as long as their session


def test_a_short_max_age_shortens_the_duplicate_window(monkeypatch):
    """JetStream refuses a duplicate window longer than max_age ('duplicates window can not
    be larger then max age'): a short retention must still declare."""
    monkeypatch.setenv("NATS_STREAM_MAX_AGE_S", "30")
    configs = {c.name: c for c in stream_configs(BusSettings().stream_settings())}
    assert configs[MEDIA].max_age == 30 and configs[MEDIA].duplicate_window == 30


@pytest.mark.parametrize("value", ["0", "-5", "a day"])
def test_retention_out_of_range_is_refused(monkeypatch, value):
    monkeypatch.setenv("NATS_STREAM_MAX_AGE_S", value)
    with pytest.raises(ValidationError):
        BusSettings()
