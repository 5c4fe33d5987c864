"""What ``/readyz`` says, as Prometheus gauges every service exports (read at scrape time).

``glyphoxa_service_ready{service}`` is 1 while ``/readyz`` answers 200, and
``glyphoxa_service_dependency_up{service,dependency}`` is 1 while the service reaches NATS
(every service) and PostgreSQL (session-control): the alerts in deploy/prometheus/alerts.yml
tell "NATS is away" from "this process is unwell" with them. Their names carry no service of
their own (they come from glyphoxa_runtime, in every process), so dashboards and alerts do
not depend on how a deployment names its scrape jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

DEPENDENCIES = ("nats", "postgres")
"""Keys of the readiness state that name a dependency (bool: reachable)."""


class ReadinessCollector(Collector):
    def __init__(self, service: str, state: Callable[[], dict[str, object]]):
        self._service, self._state = service, state

    def collect(self) -> Iterator[Metric]:
        try:
            state = self._state()
        except Exception:  # noqa: BLE001 - a scrape must not fail; /readyz shows the error
            log.exception("readiness could not be read for /metrics")
            state = {"ready": False}
        ready = GaugeMetricFamily("glyphoxa_service_ready",
                                  "1 while the process's /readyz answers 200", labels=["service"])
        ready.add_metric([self._service], 1.0 if state.get("ready") else 0.0)
        yield ready
        up = GaugeMetricFamily(
            "glyphoxa_service_dependency_up",
            "1 while the process reaches the dependency (nats; postgres for session-control)",
            labels=["service", "dependency"])
        for dependency in DEPENDENCIES:
            if dependency in state:
                up.add_metric([self._service, dependency], 1.0 if state[dependency] else 0.0)
        yield up

    def describe(self) -> list[Metric]:
        return []


def export_readiness(service: str, state: Callable[[], dict[str, object]],
                     registry: CollectorRegistry = REGISTRY) -> Callable[[], None]:
    """Register the gauges; returns what unregisters them (at the process's stop)."""
    collector = ReadinessCollector(service, state)
    registry.register(collector)
    return lambda: registry.unregister(collector)
