-- Idempotent mint and signed webhooks (API.md §9), in step with
-- migrations/postgres/V6__webhooks_idempotency.sql.

-- The answer of a mint made with an Idempotency-Key, kept 24 hours. status is NULL while the
-- first request runs (lease_until bounds how long a crashed one blocks the key); response is
-- the answer's body sealed with the data key (it names a shareable key). holder is a random
-- token of the claim: only the request holding it may keep an answer or free the key.
CREATE TABLE idempotency_keys (
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key_digest  BLOB    NOT NULL,
    fingerprint BLOB    NOT NULL,
    status      INTEGER,
    response    BLOB,
    lease_until INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    holder      TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, key_digest)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys(expires_at);

-- One endpoint per tenant; secret sealed with the data key. Tenant reads carry its event
-- types (a primary-key subquery), so the hot paths know whether to raise an event.
CREATE TABLE webhooks (
    tenant_id   TEXT    PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    url         TEXT    NOT NULL,
    events      TEXT    NOT NULL,
    secret      BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- The durable outbox of events: claimed with a lease like the message outbox. payload is
-- the JSON body sealed with the data key. status: pending, delivered, failed.
CREATE TABLE webhook_events (
    id          TEXT    PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    type        TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    due_at      INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER,
    leased_by   TEXT,
    status      TEXT    NOT NULL DEFAULT 'pending'
);
CREATE INDEX webhook_events_due ON webhook_events(status, due_at);

-- Every attempt, for GET /v1/tenant/webhook/deliveries.
CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    event_id    TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    at          INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries(tenant_id, id);
