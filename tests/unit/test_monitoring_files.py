"""deploy/prometheus (alert rules, their unit tests, the compose scrape config) checked by
promtool, the Grafana dashboard against its generator, and the PromQL name extraction the
e2e check (tests/e2e/test_monitoring_e2e.py) relies on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.monitoring import (
    ALERTS,
    DASHBOARD,
    ROOT,
    alert_queries,
    promql_matchers,
    promql_metrics,
)

pytestmark = pytest.mark.unit

PROMETHEUS = ROOT / "deploy" / "prometheus"


def find_promtool() -> str | None:
    """On PATH, or where ``./task setup`` unpacks it (scripts/promtool.sh: .venv/bin)."""
    beside = Path(sys.executable).parent / "promtool"
    return shutil.which("promtool") or (str(beside) if beside.exists() else None)


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    tool = find_promtool()
    if tool is None:
        pytest.skip("promtool is missing: ./task setup unpacks it from Debian's `prometheus` "
                    "package (scripts/promtool.sh); elsewhere install Prometheus's promtool")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_alert_rules_pass_promtool_check():
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_queries())} rules found" in result.stdout


def test_alert_rules_unit_tests_pass():
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_fails_a_wrong_expectation(tmp_path):
    """The unit tests are not vacuous: one expected alert taken away fails them."""
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    text = (PROMETHEUS / "alerts.test.yml").read_text()
    assert "exp_labels: {severity: critical, role: tts}" in text
    (tmp_path / "alerts.test.yml").write_text(
        text.replace("exp_labels: {severity: critical, role: tts}",
                     "exp_labels: {severity: critical, role: stt}"))
    result = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert result.returncode != 0 and "GlyphoxaStageNoReplicas" in result.stdout + result.stderr


def test_compose_scrape_config_passes_promtool_check():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_what_its_generator_writes():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_grafana_dashboard.py"),
                             "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize(("expr", "names"), [
    ("sum by (outcome) (rate(glyphoxa_npc_brain_turns_total[$__rate_interval]))",
     {"glyphoxa_npc_brain_turns_total"}),
    ('histogram_quantile(0.95, sum by (le, provider) (rate(a_seconds_bucket{x="y"}[5m]))) > 2.5',
     {"a_seconds_bucket"}),
    ('max by (stage) (a + b) > on (stage) 0.9 * label_replace(max by (role) (c), "stage", "$1", '
     '"role", "(.*)")', {"a", "b", "c"}),
    ("sum(rate(x_total[5m])) by (reason) / ignoring (reason) group_left sum(rate(y_total[5m]))",
     {"x_total", "y_total"}),
    ('up == 0 or absent(z{job="glyphoxa"}) unless w offset 5m and v > bool 1e3',
     {"up", "z", "w", "v"}),
    ('max by (service) (1 - dep_up{dependency="nats"}) == 1', {"dep_up"}),
    ('m{name=~"by (x)|sum("}', {"m"}),
])
def test_promql_metric_names(expr, names):
    assert promql_metrics(expr) == names


def test_promql_label_matchers():
    assert promql_matchers('m{a="x}", b=~"y|z"} + rate(n{c!=""}[$__rate_interval]) '
                           '+ sum by (d) (o)') == {("m", "a"), ("m", "b"), ("n", "c")}
