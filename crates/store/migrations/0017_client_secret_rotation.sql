-- Issue 11 §10: a source's client secret can be rotated with an overlap window, in which the
-- secret it replaced is still accepted (its senders switch without refused token requests).
ALTER TABLE sources
    ADD COLUMN previous_client_secret_hash BYTEA,
    ADD COLUMN previous_secret_expires_at TIMESTAMPTZ;
