"""The shipped Grafana dashboard and Prometheus alert rules query only what the services
really export: the stack runs as processes with instant fake providers, plays the example
scene (so the lazily made series exist), and every service's /metrics is scraped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from glyphoxa_cli.stack import Stack
from tests.e2e.conftest import EXAMPLE_CAMPAIGN, EXAMPLE_SCENE
from tests.support.monitoring import (
    PROMETHEUS_OWN,
    TARGET_LABELS,
    alert_queries,
    dashboard_queries,
    exported_labels,
    exported_names,
    promql_matchers,
    promql_metrics,
)
from tests.support.pg import fresh_database

GLYPHOXA = str(Path(sys.executable).parent / "glyphoxa")
FAKE = {"STT_PROVIDER": "fake", "BRAIN_LLM_PROVIDER": "fake", "TTS_PROVIDER": "fake",
        "SESSION_CONTROL_ALLOW_FAKE_PROVIDERS": "true"}


@pytest.fixture(scope="module")
def played_stack(tmp_path_factory, pg_admin_dsn):
    # the fake stt says the scene's lines in order, so npc-brain routes and answers them
    script = tmp_path_factory.mktemp("stt") / "script.json"
    turns = json.loads((EXAMPLE_SCENE / "scene.json").read_text())["turns"]
    script.write_text(json.dumps([t["text"] for t in sorted(turns, key=lambda t: t["start_s"])]))
    stack = Stack(tmp_path_factory.mktemp("stack"), env={**FAKE, "STT_FAKE_SCRIPT": str(script)},
                  pg_dsn=fresh_database(pg_admin_dsn))
    stack.start(progress=lambda m: None)
    try:
        out = tmp_path_factory.mktemp("out")
        result = subprocess.run(
            [GLYPHOXA, "scene", "play", str(EXAMPLE_SCENE), "--campaign", str(EXAMPLE_CAMPAIGN),
             "--out", str(out), "--speed", "4", "--nats", stack.nats_url, "--tenant", "metrics",
             "--timeout", "240"],
            capture_output=True, text=True, timeout=420,
            env={**os.environ, "GLYPHOXA_HOME": str(stack.home)})
        assert result.returncode == 0, result.stderr + result.stdout
        yield stack
    finally:
        stack.stop()


def scrape(stack: Stack) -> dict[str, str]:
    pages = {}
    for proc in stack.procs:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as r:
            pages[proc.name] = r.read().decode()
    return pages


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name]


def test_every_dashboard_and_alert_query_names_an_exported_metric(played_stack):
    pages = scrape(played_stack)
    assert {p.service for p in played_stack.procs} == {
        "session-control", "vad", "stt", "npc-brain", "tts", "discord-edge"}
    exported = set().union(*(exported_names(text) for text in pages.values()))
    labels: dict[str, set[str]] = {}
    for text in pages.values():
        for name, names in exported_labels(text).items():
            labels.setdefault(name, set()).update(names)
    for source, queries in (("deploy/grafana/glyphoxa.json", dashboard_queries()),
                            ("deploy/prometheus/alerts.yml", alert_queries())):
        assert queries, source
        for query in queries:
            names = promql_metrics(query)
            assert names, f"{source}: no metric found in {query!r}"
            unknown = names - exported - PROMETHEUS_OWN
            assert not unknown, f"{source}: {query!r} names {sorted(unknown)}, not exported"
            # a selector's label must be one the series has (where the scene made a sample)
            for metric, label in promql_matchers(query):
                if metric in labels:
                    assert label in labels[metric] | TARGET_LABELS, (
                        f"{source}: {query!r} matches {metric} on {label!r}; it has "
                        f"{sorted(labels[metric])}")


def test_the_scene_shows_in_the_metrics(played_stack):
    """The series the dashboard's first panels draw carry the scene's traffic."""
    pages = scrape(played_stack)
    by_service = {p.service: pages[p.name] for p in played_stack.procs}
    brain, tts, control = by_service["npc-brain"], by_service["tts"], by_service["session-control"]
    turns = samples(brain, "glyphoxa_npc_brain_turns_total")
    answered = {o: sum(v for s, v in turns if s["outcome"] == o) for o in ("answered", "not_addressed")}
    assert answered["answered"] >= 3 and answered["not_addressed"] >= 1, answered
    reasons = {s["reason"] for s, v in turns if v and s["outcome"] == "answered"}
    assert reasons & {"name_start_exact", "followup"}, reasons
    first_audio = samples(tts, "glyphoxa_tts_speech_to_first_audio_seconds_count")
    assert first_audio and first_audio[0][1] >= answered["answered"] - 1
    for stage in ("vad", "stt", "npc_brain", "tts"):
        claims = dict((s["result"], v) for s, v in
                      samples(by_service[stage.replace("_", "-")], f"glyphoxa_{stage}_claims_total"))
        assert claims["taken"] >= 1, (stage, claims)
    for service, text in by_service.items():
        assert samples(text, "glyphoxa_service_ready") == [({"service": service}, 1.0)]
        assert ({"service": service, "dependency": "nats"}, 1.0) in samples(
            text, "glyphoxa_service_dependency_up")
        paused = samples(text, "glyphoxa_gc_pause_seconds_count")  # start-up's full one at least
        assert any(s["generation"] == "2" and v >= 1 for s, v in paused), (service, paused)
    assert ({"service": "session-control", "dependency": "postgres"}, 1.0) in samples(
        control, "glyphoxa_service_dependency_up")
    replicas = dict((s["role"], v) for s, v in samples(control, "glyphoxa_session_control_replicas"))
    assert all(replicas[stage] == 1 for stage in ("vad", "stt", "npc-brain", "tts")), replicas
    deadline = time.monotonic() + 15  # the stream watch reads JetStream every 5 s
    while True:
        control = scrape(played_stack)["session-control-1"]
        media = dict((s["stream"], v) for s, v in
                     samples(control, "glyphoxa_session_control_stream_bytes"))
        if media.get("GLX_MEDIA", 0) > 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert media["GLX_MEDIA"] > 0 and media["GLX_EVENTS"] > 0
    ages = dict((s["stream"], v) for s, v in
                samples(control, "glyphoxa_session_control_stream_max_age_seconds"))
    assert ages["GLX_MEDIA"] == 24 * 3600
    oldest = dict((s["stream"], v) for s, v in
                  samples(control, "glyphoxa_session_control_stream_oldest_age_seconds"))
    assert 0 < oldest["GLX_MEDIA"] < 3600
    lag = {s["stage"]: v for s, v in samples(control, "glyphoxa_session_control_claims_pending")}
    assert set(lag) == {"vad", "stt", "npc-brain", "tts"} and not any(lag.values())
