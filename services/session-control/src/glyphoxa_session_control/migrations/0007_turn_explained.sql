-- Why each turn went to its NPC or to nobody (TurnEnded.routing: route kind, the name that
-- matched, where and how, a follow-up's age, table talk's mention or cue) and where a failed,
-- timed-out or cancelled turn stopped (TurnEnded.failure: stage, provider, error, retryable).
-- NULL for turns recorded before, or published by an npc-brain that did not say.
ALTER TABLE turns ADD COLUMN routing jsonb, ADD COLUMN failure jsonb;
