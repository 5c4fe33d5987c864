"""What the shipped dashboard and alert rules query, and what a running stack exports.

``promql_metrics(expr)`` lists the metric names a PromQL expression selects: identifiers
that are not functions, aggregations, keywords, label names (inside ``{...}``, ``by (...)``,
``on (...)``, ...), strings, durations or Grafana variables. ``exported_names(text)`` lists
the series names a /metrics page declares, whether or not a labelled series has a sample yet.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "glyphoxa.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus makes itself for every target (alerts.yml says so where it uses one)."""

_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                       "and", "or", "unless", "offset", "inf", "nan", "atan2"})
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GRAFANA_VAR = re.compile(r"\$\{?\w+\}?")
_TOKEN = re.compile(r"\d[\w.]*|[A-Za-z_:][A-Za-z0-9_:]*")  # a number or duration (5m, 1e3) whole


def promql_metrics(expr: str) -> set[str]:
    text = _STRING.sub(" ", expr)  # strings first: they may hold braces or parentheses
    text = _GRAFANA_VAR.sub(" ", text)
    text = _BRACES.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token[0].isdigit() or token.lower() in _KEYWORDS:
            continue
        if text[match.end():].lstrip().startswith("("):  # a function or an aggregation
            continue
        names.add(token)
    return names


_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{((?:[^}\"]|\"(?:[^\"\\\\]|\\\\.)*\")*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds to every scraped series."""


def promql_matchers(expr: str) -> set[tuple[str, str]]:
    """(metric, label) for every label a selector matches on: ``m{a="x", b=~"y"}``."""
    out = set()
    for metric, body in _SELECTOR.findall(_GRAFANA_VAR.sub(" ", expr)):
        for label in _MATCHER.findall(_STRING.sub('""', body)):
            out.add((metric, label))
    return out


def exported_labels(metrics_text: str) -> dict[str, set[str]]:
    """The label names of each series name that has samples."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def exported_names(metrics_text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("", "_sum", "_count")}.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
        names.update(sample.name for sample in family.samples)
    return names


def dashboard_queries(path: Path = DASHBOARD) -> list[str]:
    board = json.loads(path.read_text())
    return [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]


def alert_queries(path: Path = ALERTS) -> list[str]:
    rules = yaml.safe_load(path.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
