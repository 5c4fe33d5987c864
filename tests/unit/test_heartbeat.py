"""Heartbeat keys and settings (no server)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from glyphoxa_bus.connection import BusSettings
from glyphoxa_bus.heartbeat import HeartbeatPublisher, heartbeat_key, untrusted
from glyphoxa_events.models import Heartbeat

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


def _beat(role: str, *sessions: str) -> Heartbeat:
    return Heartbeat(role=role, replica="r1", sessions=list(sessions), capacity=0, at_ns=1,
                     started_ns=1)


def test_a_tenant_edge_puts_under_its_own_name():
    assert heartbeat_key("edge", "discord-home-7", owner="edge-acme") == "edge-acme.discord-home-7"


@pytest.mark.parametrize("key, beat, why", [
    ("vad.r1", _beat("vad", "acme.s1", "brine.s2"), None),
    ("edge.r1", _beat("edge", "acme.s1", "brine.s2"), None),  # the shared edge serves many
    ("edge-acme.r1", _beat("edge", "acme.s1", "acme.s2"), None),
    ("edge-acme.r1", _beat("edge", "acme.s1", "brine.s2"), "claims sessions of other tenants"),
    ("edge-acme.r1", _beat("vad", "acme.s1"), "is not the heartbeat's role 'vad'"),
    ("stt.r1", _beat("vad", "acme.s1"), "is not the heartbeat's role 'vad'"),
    ("edge-acme.r1", _beat("edge", "acme2.s1"), "claims sessions of other tenants"),
])
def test_a_heartbeat_is_believed_only_for_what_its_writer_may_say(key, beat, why):
    got = untrusted(key, beat)
    assert (got is None) if why is None else (why in (got or "")), got
