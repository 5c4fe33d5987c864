-- discord-edge: the campaign's GM role (who may run the control commands), and the NPCs a
-- session's GM has muted (what /npc list shows; the stages learn it from ctl.npc.mute).
ALTER TABLE campaigns ADD COLUMN gm_role text;
ALTER TABLE sessions ADD COLUMN muted_npcs text[] NOT NULL DEFAULT '{}';
