-- Idempotency-Key: a sender's retried POST gets the original answer (same message and log IDs)
-- instead of a second message. One row per (source, key), kept for the idempotency window
-- (24 h by default); ingress purges older rows.
CREATE TABLE idempotency_keys (
    source_id TEXT NOT NULL,
    key TEXT NOT NULL,
    -- SHA-256 of what the request asked for (data model, event type, test flag, destinations,
    -- body): the same key with a different request is refused, never answered with another's IDs.
    fingerprint BYTEA NOT NULL,
    -- pending: a request holds the key (its write is in progress, or it died mid-way);
    -- done: the broker acknowledged the message, `message_id`/`routes` are the answer;
    -- failed: the write was not accepted, the next request with the key takes it over.
    state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    -- The IDs the holder chose before writing. A request that takes over a failed or abandoned
    -- claim reuses them, so a write that did land after all carries the same IDs.
    message_id TEXT,
    routes JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
