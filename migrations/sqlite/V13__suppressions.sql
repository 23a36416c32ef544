-- Deliverability (API.md §16.1) and test keys (§17.4), in step with migrations/postgres/V13__suppressions.sql.

-- A tenant's suppression list: recipients (canonical address or E.164 number) that mints
-- do not send to; reason hard_bounce | complaint | manual; source names where it came from
-- (api, or a provider's event).
CREATE TABLE suppressions (
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    recipient   TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, recipient)
);
CREATE INDEX suppressions_newest ON suppressions(tenant_id, created_at, recipient);

-- suppression_off: 1 when the tenant only records (a mint to a suppressed recipient still
-- sends); suppressed: how many entries the list holds (0: a mint need not look).
ALTER TABLE tenants ADD COLUMN suppression_off INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN suppressed INTEGER NOT NULL DEFAULT 0;

-- Test keys (API.md §17.4): a secret key made while its tenant is a test tenant (`sk_test_`)
-- stops when the tenant is made live. Keys of tenants in test mode now are taken as test keys.
ALTER TABLE tenant_secrets ADD COLUMN test INTEGER NOT NULL DEFAULT 0;
UPDATE tenant_secrets SET test = 1 WHERE tenant_id IN (SELECT id FROM tenants WHERE test);

-- Outcomes bound to the browser that started them (API.md §17.2): a PKCE S256 challenge
-- given with a magic link or a hosted session, and when the outcome was claimed (once).
ALTER TABLE challenges ADD COLUMN code_challenge TEXT;
ALTER TABLE challenges ADD COLUMN claimed_at INTEGER;
ALTER TABLE hosted_sessions ADD COLUMN code_challenge TEXT;
ALTER TABLE hosted_sessions ADD COLUMN claimed_at INTEGER;

-- Open registration (API.md §17.6): a self-registered tenant's hosted pages and links stay
-- off until the admin approves them. Tenants that exist now keep theirs.
ALTER TABLE tenants ADD COLUMN pages_approved INTEGER NOT NULL DEFAULT 1;

-- The purge of hosted sessions finds expired ones by expires_at across all tenants
-- (API.md §17.7).
CREATE INDEX hosted_sessions_expires ON hosted_sessions(expires_at);

-- Which browser finished a hosted session (a digest of its page cookie): only it is sent
-- back to the return URL; anyone else sees that the sign-in is complete (API.md §17.2).
ALTER TABLE hosted_sessions ADD COLUMN finished_by BLOB;

-- Fixed test codes have their own failure budget (API.md §17.3): wrong guesses over all the
-- entry's keys, and when it turned inert (until the list is stored again).
ALTER TABLE test_recipients ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE test_recipients ADD COLUMN disabled_at INTEGER;
