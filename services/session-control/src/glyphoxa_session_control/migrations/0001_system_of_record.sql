-- session-control's system of record: tenants, their keys and secrets, campaigns and NPCs,
-- sessions with their state history, usage, transcripts, turns and the audit log.
-- Secrets (bot tokens, provider API keys) are stored encrypted (Fernet) in bytea columns;
-- API keys only as SHA-256 hashes.

CREATE DOMAIN glx_token AS text CHECK (VALUE ~ '^[a-z0-9][a-z0-9_-]{0,63}$');

CREATE TABLE tenants (
    id                      glx_token PRIMARY KEY,
    name                    text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    max_concurrent_sessions integer NOT NULL CHECK (max_concurrent_sessions >= 0),
    monthly_session_hours   numeric(10, 2) NOT NULL CHECK (monthly_session_hours >= 0),
    allowed_guild_ids       text[] NOT NULL DEFAULT '{}',
    bot_token_encrypted     bytea,
    disabled                boolean NOT NULL DEFAULT false,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    tenant_id   glx_token NOT NULL REFERENCES tenants (id),
    key_sha256  bytea NOT NULL UNIQUE,
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE tenant_secrets (
    tenant_id   glx_token NOT NULL REFERENCES tenants (id),
    name        text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_]{0,63}$'),
    encrypted   bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE campaigns (
    tenant_id   glx_token NOT NULL REFERENCES tenants (id),
    id          glx_token NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE npcs (
    tenant_id   glx_token NOT NULL,
    campaign_id glx_token NOT NULL,
    id          glx_token NOT NULL,
    position    integer NOT NULL,
    definition  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, campaign_id, id),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaigns (tenant_id, id) ON DELETE CASCADE
);

CREATE TYPE session_state AS ENUM ('pending', 'active', 'ending', 'ended');

CREATE TABLE sessions (
    tenant_id         glx_token NOT NULL REFERENCES tenants (id),
    id                glx_token NOT NULL,
    campaign_id       glx_token NOT NULL,
    campaign          jsonb NOT NULL,          -- the campaign as it was when the session started
    edge              text NOT NULL,
    guild_id          text,
    channel_id        text,
    state             session_state NOT NULL DEFAULT 'pending',
    reason            text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    ending_at         timestamptz,
    ended_at          timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX sessions_live ON sessions (tenant_id) WHERE state <> 'ended';
CREATE INDEX sessions_created ON sessions (tenant_id, created_at DESC);

CREATE TABLE session_transitions (
    id          bigserial PRIMARY KEY,
    tenant_id   glx_token NOT NULL,
    session_id  glx_token NOT NULL,
    from_state  session_state,
    to_state    session_state NOT NULL,
    reason      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, id)
);
CREATE INDEX session_transitions_session ON session_transitions (tenant_id, session_id, id);

-- One row per (session, metric, key): a redelivered usage event is not counted twice.
CREATE TABLE usage_events (
    tenant_id   glx_token NOT NULL,
    session_id  glx_token NOT NULL,
    metric      text NOT NULL CHECK (metric IN ('session_seconds', 'stt_audio_seconds',
                                                'llm_tokens_in', 'llm_tokens_out', 'tts_characters')),
    key         text NOT NULL,
    amount      double precision NOT NULL CHECK (amount >= 0),
    provider    text NOT NULL DEFAULT '',
    stage       text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, session_id, metric, key),
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, id)
);
CREATE INDEX usage_events_month ON usage_events (tenant_id, at);

-- What the players actually heard: every player line, and of each NPC reply only the part
-- that was played before any barge-in.
CREATE TABLE transcript_lines (
    tenant_id   glx_token NOT NULL,
    session_id  glx_token NOT NULL,
    turn_id     text NOT NULL,
    role        text NOT NULL CHECK (role IN ('player', 'npc')),
    speaker     text NOT NULL,
    text        text NOT NULL,
    complete    boolean NOT NULL DEFAULT true,
    spoken_ns   bigint NOT NULL,
    PRIMARY KEY (tenant_id, session_id, turn_id, role),
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, id)
);
CREATE INDEX transcript_lines_order ON transcript_lines (tenant_id, session_id, spoken_ns);

CREATE TABLE turns (
    tenant_id   glx_token NOT NULL,
    session_id  glx_token NOT NULL,
    turn_id     text NOT NULL,
    speaker     text NOT NULL,
    npc         text,
    outcome     text NOT NULL,
    reason      text NOT NULL DEFAULT '',
    transcript  text NOT NULL,
    latency     jsonb NOT NULL,
    speech_end_ns bigint NOT NULL DEFAULT 0,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, session_id, turn_id),
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, id)
);

-- Admin actions, append-only: the trigger refuses UPDATE and DELETE, the rule TRUNCATE.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    tenant_id   text,
    action      text NOT NULL,
    target      text NOT NULL DEFAULT '',
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
