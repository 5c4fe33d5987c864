-- Events the recorder can never store (malformed, of an unknown session, or refused by the
-- database, e.g. text with NUL): kept here with the reason, and acked, so one bad event
-- never holds up the recording of everything after it.
CREATE TABLE parked_events (
    stream      text        NOT NULL,
    stream_seq  bigint      NOT NULL,
    subject     text        NOT NULL,
    reason      text        NOT NULL,
    data        bytea       NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, stream_seq)
);
CREATE INDEX parked_events_parked_at ON parked_events (parked_at);
