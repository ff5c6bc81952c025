-- Incidents of production destinations and the alerts they raise, written by the notifier in
-- the same transaction as the log events that caused them.

-- One row per destination that has failed at least once: the run of consecutive failed
-- attempts (real messages at a production destination) since its last delivery, and the open
-- incident, if the run reached the alert threshold.
CREATE TABLE destination_incidents (
    destination_id UUID PRIMARY KEY,
    organization_id UUID NOT NULL,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    -- When the first failed attempt of the run started.
    failing_since TIMESTAMPTZ,
    last_error TEXT,
    -- The log of the latest failed attempt (the held head).
    head_log_id UUID,
    -- The open incident (a "failing" alert was raised); NULL when none is open.
    incident_id UUID,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Alerts: at most one "failing" and one "recovered" per incident (the unique key makes a second
-- one impossible, whatever replays or replicas do).
CREATE TABLE alerts (
    id UUID PRIMARY KEY,
    incident_id UUID NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('failing', 'recovered')),
    destination_id UUID NOT NULL,
    organization_id UUID NOT NULL,
    -- The notification every channel sends (docs/schemas/notification.v1.json).
    payload JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (incident_id, kind)
);

-- The outbox: one row per alert and channel, sent and retried independently of the others.
CREATE TABLE alert_deliveries (
    alert_id UUID NOT NULL REFERENCES alerts (id),
    channel TEXT NOT NULL CHECK (channel IN ('email', 'slack', 'kafka')),
    -- pending → sent, or skipped (nothing to send to: no addresses, no webhook, no SMTP server).
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'skipped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A notifier is sending it until then; after a crash another one takes it over.
    lease_until TIMESTAMPTZ,
    last_error TEXT,
    sent_at TIMESTAMPTZ,
    PRIMARY KEY (alert_id, channel)
);

CREATE INDEX alert_deliveries_due ON alert_deliveries (channel, next_attempt_at) WHERE status = 'pending';
