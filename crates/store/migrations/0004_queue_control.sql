-- Operator control of destinations, read by delivery at send time with the other settings.
ALTER TABLE destinations
    ADD COLUMN paused_by_operator BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN paused_at TIMESTAMPTZ,
    ADD COLUMN skip_log_id UUID;

-- The state of held queues (failing or paused by an operator), written by the delivery worker
-- that owns the destination; a destination without a row is flowing.
CREATE TABLE destination_queues (
    destination_id UUID PRIMARY KEY,
    reason TEXT NOT NULL CHECK (reason IN ('failing', 'operator')),
    held_since TIMESTAMPTZ NOT NULL,
    head_log_id UUID,
    head_attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ,
    last_error TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
