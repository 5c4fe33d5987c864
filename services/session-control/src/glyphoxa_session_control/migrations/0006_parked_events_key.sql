-- A stream's sequence numbers start again when the stream is made anew (a new NATS cluster,
-- a deleted stream), so (stream, stream_seq) alone made a later parked event collide with
-- an earlier one and vanish (ON CONFLICT DO NOTHING). The subject joins the key: a
-- redelivered event is still parked once.
ALTER TABLE parked_events DROP CONSTRAINT parked_events_pkey;
ALTER TABLE parked_events ADD PRIMARY KEY (stream, stream_seq, subject);
