"""Writes deploy/grafana/glyphoxa.json, the Grafana dashboard of Glyphoxa's Prometheus
metrics (``--check``: exit 1 when the file differs from what this writes).

Every query names only metrics the services export: tests/e2e/test_monitoring_e2e.py
scrapes a running stack's /metrics and checks each name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "deploy" / "grafana" / "glyphoxa.json"
STAGES = ("vad", "stt", "npc_brain", "tts")
SERVICES = ("session_control", *STAGES, "discord_edge")
RATE = "$__rate_interval"


def p(quantile: float, bucket: str, by: str = "") -> str:
    group = f"le{', ' + by if by else ''}"
    return f"histogram_quantile({quantile}, sum by ({group}) (rate({bucket}[{RATE}])))"


# (section, [(title, unit, description, [(legend, expr), ...]), ...])
SECTIONS: list[tuple[str, list[tuple[str, str, str, list[tuple[str, str]]]]]] = [
    ("Turns", [
        ("Turns by outcome", "ops", "every utterance ends as one turn (npc-brain)",
         [("{{outcome}}", f"sum by (outcome) (rate(glyphoxa_npc_brain_turns_total[{RATE}]))")]),
        ("Turns by routing reason", "ops", "how each turn was routed: a name or alias at the "
         "line's start or end (exact, fuzzy, phonetic), a follow-up, the only NPC present, table "
         "talk (a mention that did not count, or a cue), none",
         [("{{outcome}} {{reason}}",
           f"sum by (outcome, reason) (rate(glyphoxa_npc_brain_turns_total[{RATE}])) > 0")]),
        ("Failed and timed-out turns, share of turns addressed to an NPC", "percentunit",
         "the alert GlyphoxaTurnFailuresRising fires above 10% for 10 minutes",
         [("failed + timed_out",
           f"sum(rate(glyphoxa_npc_brain_turns_total{{outcome=~\"failed|timed_out\"}}[{RATE}])) / "
           f"sum(rate(glyphoxa_npc_brain_turns_total{{outcome!~\"not_addressed|muted\"}}[{RATE}]))")]),
        ("Routing decisions by kind", "ops", "who-is-addressed decisions: by name, follow-up, "
         "the only NPC present, table talk",
         [("{{kind}}", f"sum by (kind) (rate(glyphoxa_npc_brain_routing_decisions_total[{RATE}]))")]),
        ("Replies started on interim transcripts (BRAIN_SPECULATE)", "ops", "",
         [("brain {{result}}", f"sum by (result) (rate(glyphoxa_npc_brain_reply_guesses_total[{RATE}]))"),
          ("tts {{result}}", f"sum by (result) (rate(glyphoxa_tts_held_total[{RATE}]))")]),
    ]),
    ("Latency per hop", [
        ("Speech end to first audio", "s", "the player's line's end (capture time) to its "
         "reply's first audio frame published (tts); target p95 <= 1.5 s on the cloud providers "
         "(docs/benchmarks.md part 3)",
         [("p50", p(0.5, "glyphoxa_tts_speech_to_first_audio_seconds_bucket")),
          ("p95", p(0.95, "glyphoxa_tts_speech_to_first_audio_seconds_bucket"))]),
        ("Each hop, p95", "s", "vad: speech end to end of utterance; stt: speech end to final "
         "transcript; npc-brain: turn taken to first token and to first sentence; tts: first "
         "reply chunk to first audio frame",
         [("vad end of utterance", p(0.95, "glyphoxa_vad_end_decision_seconds_bucket")),
          ("stt final", p(0.95, "glyphoxa_stt_final_latency_seconds_bucket")),
          ("npc-brain first token", p(0.95, "glyphoxa_npc_brain_first_token_seconds_bucket")),
          ("npc-brain first sentence", p(0.95, "glyphoxa_npc_brain_first_sentence_seconds_bucket")),
          ("tts first audio", p(0.95, "glyphoxa_tts_first_audio_seconds_bucket"))]),
        ("Provider call time, p95", "s", "one transcription (queueing included), one sentence's "
         "synthesis",
         [("stt {{provider}}", p(0.95, "glyphoxa_stt_transcribe_seconds_bucket", "provider")),
          ("tts {{provider}}", p(0.95, "glyphoxa_tts_synth_seconds_bucket", "provider"))]),
        ("stt real-time factor, p95", "short", "transcription time / audio duration",
         [("{{provider}}", p(0.95, "glyphoxa_stt_real_time_factor_ratio_bucket", "provider"))]),
    ]),
    ("Sessions, claims and lag", [
        ("Sessions by state", "short", "", [("{{state}}", "sum by (state) (glyphoxa_session_control_sessions)")]),
        ("Claims lag per stage (what KEDA scales on)", "short",
         "claims-<stage>: pending (waiting for a replica with room) + held; a pending claim "
         "that waits SESSION_CONTROL_LIVENESS_GRACE_S ends its session",
         [("{{stage}} lag", "max by (stage) (glyphoxa_session_control_claims_pending + "
                            "glyphoxa_session_control_claims_held)"),
          ("{{stage}} pending", "max by (stage) (glyphoxa_session_control_claims_pending)")]),
        ("Live replicas and their capacity", "short", "from the heartbeats (glx_heartbeats)",
         [("{{role}} replicas", "max by (role) (glyphoxa_session_control_replicas)"),
          ("{{role}} capacity", "max by (role) (glyphoxa_session_control_replica_capacity_sessions)")]),
        ("Sessions per stage replica", "short", "",
         [(f"{s} {{{{instance}}}}", f"glyphoxa_{s}_sessions_active") for s in STAGES]),
        ("Claims by result", "ops", "taken, done, failed, lost (stalled past the lease), handed_back (SIGTERM)",
         [(f"{s} {{{{result}}}}", f"sum by (result) (rate(glyphoxa_{s}_claims_total[{RATE}]))")
          for s in STAGES]),
        ("Sessions ended by liveness, orphans noticed", "short", "",
         [("ended, no {{role}}",
           "sum by (role) (increase(glyphoxa_session_control_sessions_ended_by_liveness_total[1h]))"),
          ("orphaned {{role}}", "sum by (role) (increase(glyphoxa_session_control_orphans_noticed_total[1h]))"),
          ("zombie {{role}}", "sum by (role) (increase(glyphoxa_session_control_zombie_holders_total[1h]))")]),
    ]),
    ("Dropped frames and rejects", [
        ("discord-edge: dropped and late", "ops", "",
         [("inbound {{result}}", "sum by (result) (rate(glyphoxa_discord_edge_inbound_packets_total"
                                 f"{{result=~\"late|queue_dropped\"}}[{RATE}]))"),
          ("playback {{result}}", "sum by (result) (rate(glyphoxa_discord_edge_playback_frames_total"
                                  f"{{result=~\"late|skipped|overflow|sink_error|duplicate\"}}[{RATE}]))"),
          ("bus {{result}}", f"sum by (result) (rate(glyphoxa_discord_edge_bus_messages_total[{RATE}]))")]),
        ("Rejected messages by reason", "ops", "malformed events, oversized payloads, invalid "
         "tokens, corrupt opus, malformed claims",
         [(f"{s} {{{{reason}}}}", f"sum by (reason) (rate(glyphoxa_{s}_rejected_messages_total[{RATE}]))")
          for s in STAGES]),
        ("Not spoken, not transcribed", "ops", "",
         [("tts sentence dropped: {{reason}}",
           f"sum by (reason) (rate(glyphoxa_tts_sentences_dropped_total[{RATE}]))"),
          ("stt utterance {{result}}", "sum by (result) (rate(glyphoxa_stt_utterances_total"
                                       f"{{result=~\"failed|rejected|abandoned\"}}[{RATE}]))")]),
        ("NPC turns stopped before their end (discord-edge)", "ops", "",
         [("{{reason}}", f"sum by (reason) (rate(glyphoxa_discord_edge_playback_turns_stopped_total[{RATE}]))")]),
    ]),
    ("Providers", [
        ("Provider failures", "ops", "each failed attempt; LLM fallbacks: a turn passed over a provider",
         [("stt {{provider}} retryable={{retryable}}",
           f"sum by (provider, retryable) (rate(glyphoxa_stt_provider_errors_total[{RATE}]))"),
          ("tts {{provider}} retryable={{retryable}}",
           f"sum by (provider, retryable) (rate(glyphoxa_tts_provider_errors_total[{RATE}]))"),
          ("llm {{provider}}: {{reason}}",
           f"sum by (provider, reason) (rate(glyphoxa_npc_brain_llm_fallbacks_total[{RATE}]))")]),
        ("Circuit breakers open", "short", "1 open, 0.5 half-open (stt, tts); LLM: instances by state",
         [("stt {{provider}}", "max by (provider) (glyphoxa_stt_provider_breaker_open)"),
          ("tts {{provider}}", "max by (provider) (glyphoxa_tts_provider_breaker_open)"),
          ("llm {{provider}} {{state}}",
           "sum by (provider, state) (glyphoxa_npc_brain_llm_breakers{state!=\"closed\"})")]),
        ("LLM tokens", "ops", "", [("{{provider}} {{direction}}",
                                    f"sum by (provider, direction) (rate(glyphoxa_npc_brain_llm_tokens_total[{RATE}]))")]),
    ]),
    ("Health and retention", [
        ("Ready", "short", "1 while /readyz answers 200",
         [("{{service}} {{instance}}", "glyphoxa_service_ready")]),
        ("Dependencies reached", "short", "NATS (every service), PostgreSQL (session-control)",
         [("{{service}} {{dependency}}", "min by (service, dependency) (glyphoxa_service_dependency_up)")]),
        ("Replayable streams: bytes and cap", "bytes", "NATS_STREAM_MAX_BYTES; ~130 MiB per "
         "session-hour (docs/benchmarks.md part 7)",
         [("{{stream}}", "max by (stream) (glyphoxa_session_control_stream_bytes)"),
          ("{{stream}} cap", "max by (stream) (glyphoxa_session_control_stream_limit_bytes)")]),
        ("How far back sessions can be replayed", "s", "age of each stream's oldest message; "
         "at most NATS_STREAM_MAX_AGE_S, less once the byte cap is reached",
         [("{{stream}}", "max by (stream) (glyphoxa_session_control_stream_oldest_age_seconds)"),
          ("{{stream}} max age", "max by (stream) (glyphoxa_session_control_stream_max_age_seconds)")]),
        ("Recorded events (PostgreSQL)", "ops", "retry: PostgreSQL away; malformed, "
         "unknown_session, refused: parked",
         [("{{kind}} {{result}}",
           f"sum by (kind, result) (rate(glyphoxa_session_control_recorded_events_total[{RATE}]))")]),
        ("Admin and bus API requests", "ops", "",
         [("{{api}} {{verb}} {{result}}",
           f"sum by (api, verb, result) (rate(glyphoxa_session_control_requests_total[{RATE}]))")]),
    ]),
]


def panel(pid: int, x: int, y: int, title: str, unit: str, description: str,
          targets: list[tuple[str, str]]) -> dict:  # type: ignore[type-arg]
    return {
        "id": pid, "type": "timeseries", "title": title, "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                    for i, (legend, expr) in enumerate(targets)],
    }


def dashboard() -> dict:  # type: ignore[type-arg]
    panels: list[dict] = []  # type: ignore[type-arg]
    pid, y = 1, 0
    for section, items in SECTIONS:
        panels.append({"id": pid, "type": "row", "title": section, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, item in enumerate(items):
            panels.append(panel(pid, 12 * (i % 2), y + 8 * (i // 2), *item))
            pid += 1
        y += 8 * ((len(items) + 1) // 2)
    return {
        "title": "Glyphoxa", "uid": "glyphoxa", "tags": ["glyphoxa"], "timezone": "",
        "description": "Glyphoxa's services (deploy/grafana/glyphoxa.json, generated by "
                       "scripts/gen_grafana_dashboard.py; docs/operations.md)",
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource",
                                 "query": "prometheus", "current": {}, "hide": 0}]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def queries(board: dict) -> list[str]:  # type: ignore[type-arg]
    """Every PromQL expression in a dashboard (for the metric-name check)."""
    return [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run "
                  f"python scripts/gen_grafana_dashboard.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
