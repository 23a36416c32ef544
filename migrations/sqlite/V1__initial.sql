-- Keyring: data keys and the pepper, each wrapped by a master key (identified by kek_id).
CREATE TABLE keyring (
    kind        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    wrapped     BLOB    NOT NULL,
    kek_id      TEXT    NOT NULL,
    active      INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, version)
);

CREATE TABLE tenants (
    id              TEXT    PRIMARY KEY,
    name            TEXT    NOT NULL,
    enabled         INTEGER NOT NULL DEFAULT 1,
    origin          TEXT    NOT NULL DEFAULT 'native',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    smtp_host       TEXT    NOT NULL,
    smtp_port       INTEGER NOT NULL,
    smtp_username   TEXT    NOT NULL,
    smtp_password   BLOB    NOT NULL,
    smtp_from       TEXT    NOT NULL,
    smtp_tls        TEXT    NOT NULL,
    smtp_version    INTEGER NOT NULL DEFAULT 1,
    code_length     INTEGER NOT NULL,
    ttl_seconds     INTEGER NOT NULL,
    max_attempts    INTEGER NOT NULL
);

-- Secret keys, stored only as HMAC-SHA256(pepper, key). expires_at is set on the old
-- key when a rotation grants a grace period; NULL means current.
CREATE TABLE tenant_secrets (
    digest      BLOB    PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER
);
CREATE INDEX tenant_secrets_tenant ON tenant_secrets(tenant_id);

-- One row per code. key_digest = HMAC-SHA256(pepper, shareable key); code_hash is argon2id.
CREATE TABLE challenges (
    key_digest      BLOB    PRIMARY KEY,
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    flavor          TEXT    NOT NULL,
    email           TEXT    NOT NULL,
    email_canonical TEXT    NOT NULL,
    purpose         TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    code_hash       TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    code_length     INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    verified_at     INTEGER,
    ended_at        INTEGER
);
CREATE INDEX challenges_group ON challenges(tenant_id, email_canonical, purpose, flavor, seq);
CREATE INDEX challenges_expiry ON challenges(expires_at);

-- Sends per (tenant, recipient) and per tenant, for quotas shared by every instance.
CREATE TABLE sends (
    id              INTEGER PRIMARY KEY,
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email_canonical TEXT    NOT NULL,
    at              INTEGER NOT NULL
);
CREATE INDEX sends_recipient ON sends(tenant_id, email_canonical, at);
CREATE INDEX sends_tenant ON sends(tenant_id, at);

-- Consecutive wrong guesses per (tenant, recipient), across codes.
CREATE TABLE recipient_failures (
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email_canonical TEXT    NOT NULL,
    failures        INTEGER NOT NULL,
    window_start    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, email_canonical)
);
