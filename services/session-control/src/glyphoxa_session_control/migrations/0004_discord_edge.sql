-- discord-edge: the campaign's GM role (who may run the control commands), and the NPCs a
-- session's GM has muted (what /npc list shows; the stages learn it from ctl.npc.mute).
ALTER TABLE campaigns ADD COLUMN gm_role text;
-- which discord-edge (DISCORD_EDGE_NAME) runs the tenant's bot
ALTER TABLE tenants ADD COLUMN discord_edge text NOT NULL DEFAULT 'default';
ALTER TABLE sessions ADD COLUMN muted_npcs text[] NOT NULL DEFAULT '{}';
