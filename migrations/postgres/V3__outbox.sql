-- Delivery at a relay's speed (in step with migrations/sqlite/V3__outbox.sql).
ALTER TABLE tenants ADD COLUMN smtp_max_connections BIGINT NOT NULL DEFAULT 8;
ALTER TABLE tenants ADD COLUMN delivery TEXT NOT NULL DEFAULT 'sync';

ALTER TABLE challenges ADD COLUMN delivery_mode TEXT NOT NULL DEFAULT 'sync';
ALTER TABLE challenges ADD COLUMN delivery_status TEXT NOT NULL DEFAULT 'sent';
ALTER TABLE challenges ADD COLUMN delivery_attempts BIGINT NOT NULL DEFAULT 1;
ALTER TABLE challenges ADD COLUMN delivery_reason TEXT;
ALTER TABLE challenges ADD COLUMN sent_at BIGINT;
UPDATE challenges SET sent_at = created_at;

-- The work of sending; senders on any instance claim due rows with
-- SELECT ... FOR UPDATE SKIP LOCKED and a lease (lease_until, leased_by).
CREATE TABLE outbox (
    key_digest      BYTEA   PRIMARY KEY REFERENCES challenges(key_digest) ON DELETE CASCADE,
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    recipient       TEXT    NOT NULL,
    payload         BYTEA   NOT NULL,
    due_at          BIGINT  NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    lease_until     BIGINT,
    leased_by       TEXT,
    maybe_delivered BOOLEAN NOT NULL DEFAULT FALSE,
    quota_at        BIGINT,
    created_at      BIGINT  NOT NULL
);
CREATE INDEX outbox_due ON outbox(due_at);

CREATE TABLE tenant_send_minutes (
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    minute      BIGINT  NOT NULL,
    sends       BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, minute)
);
