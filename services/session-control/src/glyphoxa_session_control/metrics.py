"""session-control's Prometheus metrics (labels bounded: verb, state, role, result)."""

from prometheus_client import Counter, Gauge, Histogram

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
REPLICAS = Gauge("glyphoxa_session_control_replicas",
                 "live replicas by role (stage or edge), from their heartbeats", ["role"])
REPLICA_CAPACITY = Gauge("glyphoxa_session_control_replica_capacity_sessions",
                         "sessions the live replicas of a role take at most, together", ["role"])
# streamwatch: JetStream's numbers (KEDA's lag, retention)
CLAIMS_PENDING = Gauge("glyphoxa_session_control_claims_pending",
                       "sessions whose claim waits for a replica of the stage with room "
                       "(claims-<stage> num_pending)", ["stage"])
CLAIMS_HELD = Gauge("glyphoxa_session_control_claims_held",
                    "sessions a replica of the stage holds (claims-<stage> num_ack_pending); "
                    "pending + held is the lag KEDA scales the stage on", ["stage"])
STREAM_BYTES = Gauge("glyphoxa_session_control_stream_bytes",
                     "bytes a replayable stream keeps now", ["stream"])
STREAM_LIMIT_BYTES = Gauge("glyphoxa_session_control_stream_limit_bytes",
                           "a replayable stream's max_bytes (NATS_STREAM_MAX_BYTES)", ["stream"])
STREAM_MAX_AGE = Gauge("glyphoxa_session_control_stream_max_age_seconds",
                       "a replayable stream's max_age (NATS_STREAM_MAX_AGE_S)", ["stream"])
STREAM_OLDEST_AGE = Gauge("glyphoxa_session_control_stream_oldest_age_seconds",
                          "age of a replayable stream's oldest message: how far back sessions "
                          "can be replayed", ["stream"])
RECAPS = Counter("glyphoxa_session_control_recaps_total",
                 "recap tries by result: done, failed (for good), later (npc-brain busy with "
                 "turns, or none running: asked again later)", ["result"])
# campaign memory (memory.py)
MEMORIES_EMBEDDED = Counter("glyphoxa_session_control_memories_embedded_total",
                            "memories the indexer embedded (stored), or batches it could not "
                            "(db_error, embed_error: it backs off and tries again)", ["result"])
MEMORY_INDEXER_BACKLOG = Gauge("glyphoxa_session_control_memory_indexer_batch",
                               "rows in the indexer's last batch (a full batch: it is behind)")
RECALL_SECONDS = Histogram(
    "glyphoxa_session_control_recall_seconds",
    "one memory.recall answered, by phase: campaign (the session's campaign, cached after the "
    "first), embed (the line, or its cached vector), connection (waiting for a pooled "
    "PostgreSQL connection), query (PostgreSQL), total",
    ["phase"], buckets=(.001, .002, .005, .01, .015, .02, .03, .05, .1, .25, 1.0))
