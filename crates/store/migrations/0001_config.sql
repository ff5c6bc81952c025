-- Configuration owned by the router.
CREATE TABLE organizations (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    alert_emails TEXT[] NOT NULL DEFAULT '{}',
    slack_webhook_url TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE sources (
    id UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    environment TEXT NOT NULL CHECK (environment IN ('production', 'staging', 'development')),
    client_id TEXT NOT NULL UNIQUE,
    -- SHA-256 of the client secret; the secret itself is shown once, at creation.
    client_secret_hash BYTEA NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE destinations (
    id UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    environment TEXT NOT NULL CHECK (environment IN ('production', 'staging', 'development')),
    verification_token TEXT NOT NULL,
    signing_secret TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE subscriptions (
    id UUID PRIMARY KEY,
    source_id UUID NOT NULL REFERENCES sources (id),
    destination_id UUID NOT NULL REFERENCES destinations (id),
    data_model TEXT NOT NULL,
    -- Empty: every event type of the data model.
    event_types TEXT[] NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (source_id, destination_id, data_model)
);

CREATE INDEX subscriptions_by_source_model ON subscriptions (source_id, data_model);
