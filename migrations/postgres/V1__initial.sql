-- PostgreSQL schema, in step with migrations/sqlite/V1__initial.sql. Times are Unix
-- milliseconds (BIGINT), digests and sealed blobs BYTEA, flags BOOLEAN.
CREATE TABLE keyring (
    kind        TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    wrapped     BYTEA   NOT NULL,
    kek_id      TEXT    NOT NULL,
    active      BOOLEAN NOT NULL,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (kind, version)
);

CREATE TABLE tenants (
    id              TEXT    PRIMARY KEY,
    name            TEXT    NOT NULL,
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    origin          TEXT    NOT NULL DEFAULT 'native',
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    smtp_host       TEXT    NOT NULL,
    smtp_port       BIGINT  NOT NULL,
    smtp_username   TEXT    NOT NULL,
    smtp_password   BYTEA   NOT NULL,
    smtp_from       TEXT    NOT NULL,
    smtp_tls        TEXT    NOT NULL,
    smtp_version    BIGINT  NOT NULL DEFAULT 1,
    code_length     BIGINT  NOT NULL,
    ttl_seconds     BIGINT  NOT NULL,
    max_attempts    BIGINT  NOT NULL
);

-- Secret keys, stored only as HMAC-SHA256(pepper, key); the primary key makes a secret
-- belong to one tenant whatever the instances do at once.
CREATE TABLE tenant_secrets (
    digest      BYTEA   PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT
);
CREATE INDEX tenant_secrets_tenant ON tenant_secrets(tenant_id);

CREATE TABLE challenges (
    key_digest      BYTEA   PRIMARY KEY,
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    flavor          TEXT    NOT NULL,
    email           TEXT    NOT NULL,
    email_canonical TEXT    NOT NULL,
    purpose         TEXT    NOT NULL,
    seq             BIGINT  NOT NULL,
    code_hash       TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    max_attempts    BIGINT  NOT NULL,
    code_length     BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT  NOT NULL,
    verified_at     BIGINT,
    ended_at        BIGINT
);
CREATE INDEX challenges_group ON challenges(tenant_id, email_canonical, purpose, flavor, seq);
CREATE INDEX challenges_expiry ON challenges(expires_at);

CREATE TABLE sends (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email_canonical TEXT    NOT NULL,
    at              BIGINT  NOT NULL
);
CREATE INDEX sends_recipient ON sends(tenant_id, email_canonical, at);
CREATE INDEX sends_tenant ON sends(tenant_id, at);

CREATE TABLE recipient_failures (
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email_canonical TEXT    NOT NULL,
    failures        BIGINT  NOT NULL,
    window_start    BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, email_canonical)
);
