"""Prometheus metrics of discord-edge (``glyphoxa_discord_edge_<thing>``; bounded labels).

The receive path, the inbound side and playback count in plain attributes, per voice
connection and session (no Prometheus in their hot paths). :class:`EdgeTotals` adds up a
bot's: the live sessions' counts plus those of sessions already closed, so every counter
only grows. :class:`EdgeCollector` reports all bots' totals at scrape time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from glyphoxa_discord_edge.bridge import SessionBridge
from glyphoxa_discord_edge.voice_receive import ReceiveCounters

PREFIX = "glyphoxa_discord_edge"

# counter family -> (help, label, {label value: source key})
FAMILIES: dict[str, tuple[str, str, dict[str, str]]] = {
    "voice_packets": (
        "received voice datagrams by what became of them", "result",
        {k: f"receive.{k}" for k in ReceiveCounters.__dataclass_fields__ if k != "identified"}),
    "voice_speakers_identified": (
        "speakers (SSRCs) known by the DAVE key that opened their audio, before op 5 named them",
        "how", {"dave_key": "receive.identified"}),
    "inbound_packets": (
        "players' packets published to audio.in, or dropped as late (after a later one)",
        "result", {"published": "inbound.published", "late": "inbound.late",
                   "queue_dropped": "bridge.queue_dropped"}),
    "playback_frames": (
        "frames played into voice channels, and frames not played", "result",
        {"audio": "playback.frames_sent", "silence": "playback.silence_sent",
         "duplicate": "playback.duplicates", "late": "playback.late",
         "skipped": "playback.skipped", "overflow": "playback.overflow",
         "sink_error": "playback.sink_errors"}),
    "bus_messages": (
        "messages the broker had not stored when it went away, published again once it was "
        "back (resent), or given up beyond DISCORD_EDGE_RESEND_LIMIT (dropped)", "result",
        {"resent": "bus.resent", "dropped": "bus.dropped"}),
    "playback_turns_stopped": (
        "NPC turns stopped before their end", "reason",
        {"bargein": "playback.bargeins", "flush": "playback.flushed",
         "too_many_queued": "playback.turns_dropped"}),
}


def bridge_counts(bridge: SessionBridge, receive: ReceiveCounters | None) -> Counter[str]:
    counts = receive_counts(receive)
    for prefix, source in (("inbound", bridge.inbound.counters), ("bridge", bridge.counters),
                           ("playback", bridge.playback.stats)):
        counts.update({f"{prefix}.{k}": v for k, v in asdict(source).items()})
    return counts


def receive_counts(receive: ReceiveCounters | None) -> Counter[str]:
    """One voice connection's receive counters (a session may have several, one after
    another, when voice is connected anew)."""
    if receive is None:
        return Counter()
    return Counter({f"receive.{k}": v for k, v in asdict(receive).items()})


class EdgeTotals:
    """One bot's counts: closed sessions' plus the live ones' (``live`` gives those)."""

    def __init__(self, live: Callable[[], Iterable[Counter[str]]]):
        self._live = live
        self._closed: Counter[str] = Counter()

    def retire(self, counts: Counter[str]) -> None:
        self._closed.update(counts)

    def counts(self) -> Counter[str]:
        total = Counter(self._closed)
        for counts in self._live():
            total.update(counts)
        return total


class EdgeCollector(Collector):
    """The edge's metrics at scrape time: ``counts`` (every bot's totals, stopped bots'
    included), ``bots`` (configured, connected) and ``sessions`` (bridged now)."""

    def __init__(self, counts: Callable[[], Counter[str]], bots: Callable[[], tuple[int, int]],
                 sessions: Callable[[], int]):
        self._counts, self._bots, self._sessions = counts, bots, sessions

    def collect(self) -> Iterator[Metric]:
        total = self._counts()
        for name, (doc, label, keys) in FAMILIES.items():
            family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=[label])
            for value, key in keys.items():
                family.add_metric([value], total.get(key, 0))
            yield family
        gauge = GaugeMetricFamily(f"{PREFIX}_bots", "tenants' bots this edge runs, by state",
                                  labels=["state"])
        configured, connected = self._bots()
        gauge.add_metric(["configured"], configured)
        gauge.add_metric(["connected"], connected)
        yield gauge
        yield GaugeMetricFamily(f"{PREFIX}_sessions_active", "sessions bridged now",
                                value=self._sessions())

    def describe(self) -> list[Any]:
        return []
