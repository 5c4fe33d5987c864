"""discord-edge's metrics: every bot's sessions added up at scrape time, closed sessions and
stopped bots included, so counters only grow."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from glyphoxa_discord_edge.metrics import EdgeCollector, EdgeTotals

pytestmark = pytest.mark.unit


def scrape(collector: EdgeCollector) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_closed_sessions_still_count_and_every_family_is_there():
    live = [Counter({"receive.decrypted": 5, "playback.frames_sent": 50, "playback.bargeins": 1})]
    totals = EdgeTotals(lambda: live)
    collector = EdgeCollector(totals.counts, lambda: (2, 1), lambda: len(live))
    first = scrape(collector)
    assert first['glyphoxa_discord_edge_voice_packets_total{result="decrypted"}'] == 5
    assert first['glyphoxa_discord_edge_playback_frames_total{result="audio"}'] == 50
    assert first['glyphoxa_discord_edge_playback_turns_stopped_total{reason="bargein"}'] == 1
    assert first['glyphoxa_discord_edge_bots{state="configured"}'] == 2
    assert first['glyphoxa_discord_edge_bots{state="connected"}'] == 1
    assert first["glyphoxa_discord_edge_sessions_active"] == 1
    assert first['glyphoxa_discord_edge_inbound_packets_total{result="late"}'] == 0

    totals.retire(live.pop())  # the session closed
    live.append(Counter({"receive.decrypted": 2}))  # a new one began
    second = scrape(collector)
    assert second['glyphoxa_discord_edge_voice_packets_total{result="decrypted"}'] == 7
    assert second['glyphoxa_discord_edge_playback_frames_total{result="audio"}'] == 50
