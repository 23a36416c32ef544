-- Test mode, resend under one handle, statistics (API.md §13), in step with
-- migrations/sqlite/V8__developer_experience.sql.

-- A test tenant sends nothing to any relay: every mint goes to its test inbox.
-- test_version is bumped with every change of its test recipients (cached per process).
ALTER TABLE tenants ADD COLUMN test BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE tenants ADD COLUMN test_version BIGINT NOT NULL DEFAULT 0;

-- Recipients whose mints go to the test inbox: an exact canonical address or number, or a
-- pattern with `*`; a fixed code (exact recipients only) is stored hashed like every code.
CREATE TABLE test_recipients (
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    pattern     TEXT    NOT NULL,
    code_hash   TEXT,
    code_length BIGINT,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, pattern)
);

-- The rendered messages of test mints (sealed with the data key and bound to the code's key,
-- like an outbox row: they hold codes); recipient is the canonical address; the last 100 per
-- tenant, kept one hour.
CREATE TABLE test_inbox (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key_digest  BYTEA    NOT NULL,
    recipient   TEXT    NOT NULL,
    message     BYTEA    NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX test_inbox_tenant ON test_inbox(tenant_id, id);

-- Test mints per tenant per minute, for limits.test_sends_per_hour.
CREATE TABLE test_send_minutes (
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    minute      BIGINT NOT NULL,
    sends       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, minute)
);

-- Resend under one handle: the key's earlier codes (PHC strings of the same salt, one per
-- line) keep verifying until the key expires.
ALTER TABLE challenges ADD COLUMN resends BIGINT NOT NULL DEFAULT 0;
ALTER TABLE challenges ADD COLUMN earlier_hashes TEXT NOT NULL DEFAULT '';
ALTER TABLE challenges ADD COLUMN test BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE challenges ADD COLUMN channel TEXT NOT NULL DEFAULT 'email';
-- Whether a code counts in the statistics: 0 not (codes from before this version, imported
-- codes, test codes — those count once, as `test`), 1 counted, 2 counted and nothing more
-- to count (its unverified expiry counted, or it failed before expiring).
ALTER TABLE challenges ADD COLUMN stats_state BIGINT NOT NULL DEFAULT 0;
CREATE INDEX challenges_uncounted ON challenges(expires_at) WHERE status IN ('pending', 'failed') AND stats_state = 1;

-- Statistics: counts per tenant, hour of the code's mint, and one dimension's value
-- (dim: all, purpose, locale, channel, domain), updated in the transactions that change a
-- code; shard spreads concurrent updates of one row over several (PostgreSQL row locks).
-- v0..v14: codes verified within 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 1800,
-- 3600 seconds of their mint, and later. Counts are INTEGER: SUM over them accumulates in a
-- BIGINT, not in a NUMERIC as over BIGINT. The key's order serves a tenant's range of hours
-- of one dimension; stats_hour serves all tenants'. Hours older than two days are folded
-- into shard 0 hourly.
CREATE TABLE stats (
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    dim         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    hour        BIGINT NOT NULL,
    shard       BIGINT NOT NULL,
    minted      INTEGER NOT NULL DEFAULT 0,
    sent        INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    verified    INTEGER NOT NULL DEFAULT 0,
    expired_unverified INTEGER NOT NULL DEFAULT 0,
    test        INTEGER NOT NULL DEFAULT 0,
    v0 INTEGER NOT NULL DEFAULT 0, v1 INTEGER NOT NULL DEFAULT 0, v2 INTEGER NOT NULL DEFAULT 0,
    v3 INTEGER NOT NULL DEFAULT 0, v4 INTEGER NOT NULL DEFAULT 0, v5 INTEGER NOT NULL DEFAULT 0,
    v6 INTEGER NOT NULL DEFAULT 0, v7 INTEGER NOT NULL DEFAULT 0, v8 INTEGER NOT NULL DEFAULT 0,
    v9 INTEGER NOT NULL DEFAULT 0, v10 INTEGER NOT NULL DEFAULT 0, v11 INTEGER NOT NULL DEFAULT 0,
    v12 INTEGER NOT NULL DEFAULT 0, v13 INTEGER NOT NULL DEFAULT 0, v14 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, dim, hour, value, shard)
);
CREATE INDEX stats_hour ON stats(dim, hour);
