-- The memories of earlier sessions recalled into a turn's reply (TurnEnded.memories: ids in
-- ``memories``), kept with the turn so "why did Greta know that?" has an answer after the
-- streams have dropped the session. No foreign key: a memory the GM deleted later leaves
-- its id here, and the memories route says it is gone.
ALTER TABLE turns ADD COLUMN memories text[] NOT NULL DEFAULT '{}';
