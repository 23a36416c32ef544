-- Delivery at a relay's speed (API.md §10): per-tenant SMTP concurrency and delivery mode,
-- each code's delivery state, and the durable outbox its message waits in.
ALTER TABLE tenants ADD COLUMN smtp_max_connections INTEGER NOT NULL DEFAULT 8;
ALTER TABLE tenants ADD COLUMN delivery TEXT NOT NULL DEFAULT 'sync';

-- Codes stored before this migration were stored once their message was accepted.
ALTER TABLE challenges ADD COLUMN delivery_mode TEXT NOT NULL DEFAULT 'sync';
ALTER TABLE challenges ADD COLUMN delivery_status TEXT NOT NULL DEFAULT 'sent';
ALTER TABLE challenges ADD COLUMN delivery_attempts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE challenges ADD COLUMN delivery_reason TEXT;
ALTER TABLE challenges ADD COLUMN sent_at INTEGER;
UPDATE challenges SET sent_at = created_at;

-- One row per message not yet accepted or given up: the work, not the record (the record
-- is on the challenge). payload is the rendered message sealed with the data key (it holds
-- the code). A sender claims due rows by setting lease_until/leased_by with a conditional
-- UPDATE; an expired lease is work any instance may take.
CREATE TABLE outbox (
    key_digest      BLOB    PRIMARY KEY REFERENCES challenges(key_digest) ON DELETE CASCADE,
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    recipient       TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    due_at          INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_until     INTEGER,
    leased_by       TEXT,
    maybe_delivered INTEGER NOT NULL DEFAULT 0,
    quota_at        INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox(due_at);

-- Sends per tenant per minute, for the hourly tenant quota: counting the last hour reads
-- at most 61 rows instead of every send of the hour (the count grew with the tenant's
-- volume). The window is the last 60 whole minutes plus the current one's sends so far.
CREATE TABLE tenant_send_minutes (
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    minute      INTEGER NOT NULL,
    sends       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, minute)
);
INSERT INTO tenant_send_minutes (tenant_id, minute, sends)
    SELECT tenant_id, at / 60000, COUNT(*) FROM sends GROUP BY tenant_id, at / 60000;
