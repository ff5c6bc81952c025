-- private_key_jwt client authentication (RFC 7523): the public key a source signs its client
-- assertions with, and the assertion IDs (jti) already used, kept until the assertion expires
-- so none is accepted twice.
ALTER TABLE sources ADD COLUMN public_jwk TEXT;

CREATE TABLE client_assertion_jtis (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (client_id, jti)
);

CREATE INDEX client_assertion_jtis_by_expiry ON client_assertion_jtis (expires_at);
