-- Manual retry: where each log's delivery task sits in carrier.deliveries (to read the message
-- again), and a held head's "attempt now" request.
ALTER TABLE logs
    ADD COLUMN task_partition INTEGER,
    ADD COLUMN task_offset BIGINT;

ALTER TABLE destinations
    ADD COLUMN retry_log_id UUID,
    ADD COLUMN retry_requested_at TIMESTAMPTZ;
