-- Operator markers name the task they were given for, not only its log: a log can have several
-- tasks (its original one and one per manual retry), and a skip of one must not cancel a later
-- manual retry of the same log.
ALTER TABLE destinations
    ADD COLUMN skip_retry_id TEXT,
    ADD COLUMN retry_now_retry_id TEXT;

-- The held head's task, and when it was last attempted: the next owner of the destination's
-- partition honours a "retry now" only if it came after that attempt (a used marker never cuts
-- the stored backoff short twice).
ALTER TABLE destination_queues
    ADD COLUMN head_retry_id TEXT NOT NULL DEFAULT '',
    ADD COLUMN last_attempt_at TIMESTAMPTZ;
