-- Campaign memory (ADR 0007): what each NPC may remember across sessions, the recaps made
-- after a session, and full-text search over transcripts.
--
-- pgvector: the Kubernetes cluster creates the extension as a superuser at bootstrap
-- (k8s/base/postgres/cluster.yaml); compose's and the tests' servers run migrations as their
-- superuser. IF NOT EXISTS needs no privilege where it already exists.
CREATE EXTENSION IF NOT EXISTS vector;

-- The campaign's lore (every NPC knows it) and overhear (NPCs of one scene remember what is
-- said to each other) were lost on import before: they are part of the campaign now.
ALTER TABLE campaigns
    ADD COLUMN lore text NOT NULL DEFAULT '',
    ADD COLUMN overhear boolean NOT NULL DEFAULT false;

-- One row per heard exchange (kind 'exchange': a player's line and the part of the NPC's reply
-- that was heard) and per fact a GM taught an NPC (kind 'fact', no session). ``witnesses`` are
-- the NPCs that may recall the row (glyphoxa_campaign.Campaign.witnesses at the time it was
-- said); ``present`` the NPCs of the addressed NPC's scene. ``text`` is what is embedded and
-- shown (a GM may edit it; ``edited_at`` then keeps the recorder from rewriting it). Rows are
-- written without an embedding; the indexer fills ``embedding``/``embed_model``.
CREATE TABLE memories (
    id           bigserial PRIMARY KEY,
    tenant_id    glx_token NOT NULL,
    campaign_id  glx_token NOT NULL,
    session_id   glx_token,
    turn_id      text,
    kind         text NOT NULL CHECK (kind IN ('exchange', 'fact')),
    speaker      text,
    npc          glx_token NOT NULL,
    present      text[] NOT NULL DEFAULT '{}',
    witnesses    text[] NOT NULL CHECK (cardinality(witnesses) >= 1),
    player_text  text NOT NULL DEFAULT '',
    npc_text     text NOT NULL DEFAULT '',
    played       boolean NOT NULL DEFAULT false,   -- npc_text is what ctl.played said was heard
    text         text NOT NULL CHECK (length(text) BETWEEN 1 AND 10000),
    spoken_at    timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    embedding    vector(384),
    embed_model  text,
    taught_by    text,
    edited_by    text,
    edited_at    timestamptz,
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaigns (tenant_id, id) ON DELETE CASCADE,
    CHECK ((kind = 'exchange') = (session_id IS NOT NULL AND turn_id IS NOT NULL)),
    UNIQUE (tenant_id, session_id, turn_id)  -- a redelivered event is stored once (facts: NULLs)
);
CREATE INDEX memories_npc ON memories (tenant_id, campaign_id, npc, spoken_at DESC);
CREATE INDEX memories_witnesses ON memories USING gin (witnesses);
CREATE INDEX memories_embedding ON memories USING hnsw (embedding vector_cosine_ops);
CREATE INDEX memories_unembedded ON memories (id) WHERE embedding IS NULL;
CREATE INDEX memories_embed_model ON memories (embed_model);

-- One recap per (campaign, session, NPC), made after the session ends by npc-brain's LLM.
CREATE TABLE npc_recaps (
    id           bigserial PRIMARY KEY,
    tenant_id    glx_token NOT NULL,
    campaign_id  glx_token NOT NULL,
    session_id   glx_token NOT NULL,
    npc          glx_token NOT NULL,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    text         text NOT NULL DEFAULT '',
    error        text,
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    model        text,
    next_try_at  timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    edited_by    text,
    edited_at    timestamptz,
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaigns (tenant_id, id) ON DELETE CASCADE,
    UNIQUE (tenant_id, campaign_id, session_id, npc)
);
CREATE INDEX npc_recaps_npc ON npc_recaps (tenant_id, campaign_id, npc, created_at DESC);
CREATE INDEX npc_recaps_due ON npc_recaps (next_try_at) WHERE status = 'pending';

-- The GM's transcript search. 'simple' (lower-cased words, no stemming, no stop words) and not
-- 'english': tables play in any language, and what a GM looks for is mostly names ("Aldric",
-- "Vex'ahlia"), which an English stemmer would cut or an English stop list could drop.
-- Sessions have no foreign key to campaigns: deleting a campaign removes its memories and
-- recaps (above) but keeps its sessions' transcripts, which stay readable per session; the
-- campaign search route needs the campaign, so they are no longer found by it.
ALTER TABLE transcript_lines
    ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED;
CREATE INDEX transcript_lines_search ON transcript_lines USING gin (search);
CREATE INDEX sessions_campaign ON sessions (tenant_id, campaign_id, created_at DESC);
