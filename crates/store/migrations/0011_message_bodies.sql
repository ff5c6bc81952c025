-- Bodies too large to travel through Kafka (over ingress's `inline_body_bytes`, 512 KiB by
-- default): ingress stores them here before its durable write, the records carry only a
-- reference (`body_stored`), and delivery reads the body at send time. Purged after
-- `stored_body_retention_days` (30 by default, the log retention).
CREATE TABLE message_bodies (
    message_id TEXT PRIMARY KEY,
    body BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX message_bodies_by_age ON message_bodies (created_at);
