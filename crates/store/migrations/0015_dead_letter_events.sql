-- Log events the log store refuses (a value Postgres cannot take, such as a NUL byte in text,
-- from a producer that did not clean it). The notifier sets such an event aside here, counts and
-- logs it, and goes on: one event must not stop the log store for every destination whose events
-- share its partition. Operators inspect the row (`error` says why), fix the cause, and drop it.
CREATE TABLE dead_letter_events (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    record_offset BIGINT NOT NULL,
    log_id TEXT NOT NULL,
    destination_id TEXT NOT NULL,
    event BYTEA NOT NULL,
    error TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, record_offset)
);
