-- The log store, written by the notifier from carrier.log-events.
CREATE TABLE logs (
    id UUID PRIMARY KEY,
    message_id UUID NOT NULL,
    destination_id UUID NOT NULL,
    organization_id UUID NOT NULL,
    source_id UUID NOT NULL,
    data_model TEXT NOT NULL,
    event_type TEXT NOT NULL,
    environment TEXT NOT NULL,
    test BOOLEAN NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'delivered', 'failed', 'cancelled')),
    -- The attempt number of the event that set `status` (0: created). Events may arrive out of
    -- order across producers; a status only moves forward.
    status_seq INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    received_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX logs_by_destination ON logs (destination_id, received_at DESC);
CREATE INDEX logs_by_organization ON logs (organization_id, received_at DESC);
CREATE INDEX logs_by_message ON logs (message_id);

CREATE TABLE attempts (
    log_id UUID NOT NULL,
    number INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    duration_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    status_code INTEGER,
    error TEXT,
    response_excerpt TEXT,
    -- A replayed event never duplicates an attempt.
    PRIMARY KEY (log_id, number)
);
