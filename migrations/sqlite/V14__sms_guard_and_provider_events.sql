-- The SMS fraud guard (API.md §17.1), in step with migrations/postgres/V14__sms_guard_and_provider_events.sql.

-- A tenant's SMS settings: the countries it texts (ISO 3166-1 alpha-2, comma-separated;
-- empty: none, so SMS is opt-in per country), how many days a number that verified a code
-- skips the velocity limits, and whether fixed-line numbers are texted.
ALTER TABLE tenants ADD COLUMN sms_allowed_countries TEXT NOT NULL DEFAULT '';
ALTER TABLE tenants ADD COLUMN sms_trusted_days INTEGER NOT NULL DEFAULT 90;
ALTER TABLE tenants ADD COLUMN sms_allow_fixed_line INTEGER NOT NULL DEFAULT 0;

-- The tenant's SMS of the last hour, by range (the number without its last 3 digits) and
-- country, for the velocity limits; key_digest names the code (a verified one leaves the
-- unverified count). Purged with the send records.
CREATE TABLE sms_sends (
    tenant_id    TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key_digest   BLOB    NOT NULL,
    range_prefix TEXT    NOT NULL,
    country      TEXT    NOT NULL,
    at           INTEGER  NOT NULL
);
CREATE INDEX sms_sends_range ON sms_sends(tenant_id, range_prefix, at);
CREATE INDEX sms_sends_country ON sms_sends(tenant_id, country, at);
CREATE INDEX sms_sends_key ON sms_sends(key_digest);

-- Numbers that verified a code of the tenant, and when last: trusted for its trusted_days.
CREATE TABLE sms_trusted (
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    phone       TEXT    NOT NULL,
    verified_at INTEGER  NOT NULL,
    PRIMARY KEY (tenant_id, phone)
);

-- Mints the guard refused, by reason, in the statistics (API.md §17.1).
ALTER TABLE stats ADD COLUMN blocked_country INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stats ADD COLUMN blocked_number INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stats ADD COLUMN blocked_velocity INTEGER NOT NULL DEFAULT 0;

-- Deliverability (API.md §16.2): provider events seen, so a duplicate changes nothing;
-- purged after 30 days. Hard bounces and complaints in the statistics.
CREATE TABLE provider_events (
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    provider    TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, provider, event_id)
);
CREATE INDEX provider_events_received ON provider_events(received_at);
CREATE INDEX challenges_provider_message ON challenges(tenant_id, provider_message_id);
ALTER TABLE stats ADD COLUMN bounced INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stats ADD COLUMN complained INTEGER NOT NULL DEFAULT 0;

-- DKIM per tenant (API.md §16.3): the keys' public parts as JSON (domain, selector,
-- algorithm, public key, created_at; the newest signs) and their private keys, sealed with
-- the data key as one JSON object by selector.
ALTER TABLE tenants ADD COLUMN dkim_keys TEXT NOT NULL DEFAULT '';
ALTER TABLE tenants ADD COLUMN dkim_private BLOB;
