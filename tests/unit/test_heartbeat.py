"""Heartbeat keys and settings (no server)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from glyphoxa_bus.connection import BusSettings
from glyphoxa_bus.heartbeat import HeartbeatPublisher, heartbeat_key

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("role, replica, key", [
    ("stt", "stt-host-12", "stt.stt-host-12"),
    ("npc-brain", "npc-brain-pod.ns.svc:80", "npc-brain.npc-brain-pod_ns_svc_80"),
    ("edge", "scene-42", "edge.scene-42"),
    ("vad", "a b*>.ä", "vad.a_b____"),
    ("tts", "", "tts._"),
])
def test_keys_hold_only_characters_kv_allows(role, replica, key):
    assert heartbeat_key(role, replica) == key


def test_ttl_must_exceed_the_interval(monkeypatch):
    assert (BusSettings().heartbeat_interval_s, BusSettings().heartbeat_ttl_s) == (2.0, 6.0)
    monkeypatch.setenv("NATS_HEARTBEAT_INTERVAL_S", "1")
    monkeypatch.setenv("NATS_HEARTBEAT_TTL_S", "3")
    assert (BusSettings().heartbeat_interval_s, BusSettings().heartbeat_ttl_s) == (1.0, 3.0)
    with pytest.raises(ValidationError, match="must exceed"):
        BusSettings(heartbeat_interval_s=6, heartbeat_ttl_s=6)
    with pytest.raises(ValueError, match="must exceed"):
        HeartbeatPublisher(None, "stt", "x", list, interval_s=5, ttl_s=5)  # type: ignore[arg-type]
