-- The session a replay (``glyphoxa session replay``) re-runs. A replay is a debugging run:
-- its exchanges are recorded like any session's turns but never become campaign memory, so
-- replaying last week's session does not make the NPCs remember it twice (nor make recaps).
ALTER TABLE sessions ADD COLUMN replay_of text;
