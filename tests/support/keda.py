"""What KEDA's ``nats-jetstream`` scaler and the HPA behind it would do, against a real
nats-server's monitoring port.

The scaler (kedacore/keda ``pkg/scalers/nats_jetstream_scaler.go``, read at commit
8b4f083c, 2026-08-20):

- builds ``http://<natsServerMonitoringEndpoint>/jsz`` with the query ``acc=<account>``,
  ``config=true`` and ``consumers=true`` (Go's ``url.Values.Encode``: keys sorted, values
  escaped, so ``$G`` is sent as ``%24G``); ``account`` (or ``accountID``) is required;
- in the answer's ``account_details`` takes the account whose ``id`` equals ``accountID``
  (which defaults to ``account``) or whose ``name`` equals ``account``, in it the stream whose
  ``name`` is the trigger's ``stream``, in that stream's ``consumer_detail`` the consumer
  whose ``name`` is the trigger's ``consumer`` (exact matches);
- reports ``num_pending + num_ack_pending`` of that consumer as the metric, and is active
  when it exceeds ``activationLagThreshold``;
- in a cluster (``meta_cluster.cluster_size`` > 1) asks ``/varz`` for the nodes and reads the
  consumer's leader instead; a single server answers for itself (what this helper covers).

The metric's target is ``lagThreshold`` as an ``AverageValue``, so the HPA wants
``ceil(lag / lagThreshold)`` replicas (then clamped to min/max replicas; below activation
KEDA scales to ``minReplicaCount``).
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCALING = ROOT / "k8s" / "base" / "scaling.yaml"
NO_ACCOUNTS = "$G"
"""The account nats-server puts every client in when it has no accounts configured."""


def scaling_numbers() -> dict[str, str]:
    """k8s/base/scaling.yaml's data: ``<stage>-capacity``, ``<stage>-lag-threshold``, ..."""
    return yaml.safe_load(SCALING.read_text())["data"]


def jsz_url(monitoring_endpoint: str, account: str) -> str:
    """The scaler's monitoring URL (``getNATSJetStreamMonitoringURL``), plain HTTP."""
    query = urllib.parse.urlencode(sorted(
        {"acc": account, "consumers": "true", "config": "true"}.items()))
    return urllib.parse.urlunsplit(("http", monitoring_endpoint, "/jsz", query, ""))


def consumer_lag(jsz: dict, account: str, stream: str, consumer: str) -> int:
    """``num_pending + num_ack_pending`` of ``consumer`` in ``stream`` of ``account``, found
    as the scaler finds it; raises LookupError where the scaler reports an error."""
    for acc in jsz.get("account_details") or []:
        if account not in (acc.get("id"), acc.get("name")):
            continue
        for detail in acc.get("stream_detail") or []:
            if detail.get("name") != stream:
                continue
            for cons in detail.get("consumer_detail") or []:
                if cons.get("name") == consumer:
                    return int(cons.get("num_pending", 0)) + int(cons.get("num_ack_pending", 0))
            raise LookupError(f"consumer {consumer!r} not found in stream {stream!r}")
    raise LookupError("stream not found")


def desired_replicas(lag: int, lag_threshold: int, min_replicas: int = 0,
                     max_replicas: int | None = None) -> int:
    """The HPA on an AverageValue target: ceil(metric / target), clamped."""
    wanted = math.ceil(lag / lag_threshold)
    wanted = max(wanted, min_replicas)
    return wanted if max_replicas is None else min(wanted, max_replicas)


@dataclass
class Scaler:
    """One ``nats-jetstream`` trigger: where it looks and what it aims at."""

    monitoring_endpoint: str
    account: str
    stream: str
    consumer: str
    lag_threshold: int

    def lag(self) -> int:
        with urllib.request.urlopen(jsz_url(self.monitoring_endpoint, self.account),
                                    timeout=5) as resp:
            return consumer_lag(json.load(resp), self.account, self.stream, self.consumer)

    def replicas(self, min_replicas: int = 0, max_replicas: int | None = None) -> int:
        return desired_replicas(self.lag(), self.lag_threshold, min_replicas, max_replicas)
