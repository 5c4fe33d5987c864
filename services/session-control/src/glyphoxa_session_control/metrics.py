"""session-control's Prometheus metrics (labels bounded: verb, state, role, result)."""

from prometheus_client import Counter, Gauge

REQUESTS = Counter("glyphoxa_session_control_requests_total", "API requests",
                   ["api", "verb", "result"])
SESSIONS = Gauge("glyphoxa_session_control_sessions", "sessions by state (live ones)", ["state"])
ORPHANS = Counter("glyphoxa_session_control_orphans_noticed_total",
                  "a live session found without a holder for a role (stage or edge)", ["role"])
LIVENESS_ENDED = Counter("glyphoxa_session_control_sessions_ended_by_liveness_total",
                         "sessions ended because a role had no live holder for the grace time", ["role"])
ZOMBIES = Counter("glyphoxa_session_control_zombie_holders_total",
                  "replicas still serving a session that has ended (told to stop again)", ["role"])
RECORDED = Counter("glyphoxa_session_control_recorded_events_total",
                   "events stored (usage, turns, what was played)", ["kind", "result"])
