-- Hosted verification pages (API.md §14.1), in step with migrations/postgres/V11__hosted_pages.sql.

-- A tenant's colour on its pages (#RRGGBB, '' : the default).
ALTER TABLE tenants ADD COLUMN brand_color TEXT NOT NULL DEFAULT '';

-- A tenant's logo on its pages: one PNG of at most 64 KiB, served by otpmint.
CREATE TABLE tenant_logos (
    tenant_id   TEXT    PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    png         BLOB    NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- A hosted session: a person proves an address on otpmint's pages and goes back to the
-- tenant's return URL. Its code is an ordinary code (key_digest); the shareable key the
-- pages verify with is sealed with the data key, bound to the session.
CREATE TABLE hosted_sessions (
    id          TEXT    PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email       TEXT,
    purpose     TEXT    NOT NULL,
    locale      TEXT,
    return_url  TEXT    NOT NULL,
    key_digest  BLOB,
    key_sealed  BLOB,
    status      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    verified_at INTEGER
);
CREATE INDEX hosted_sessions_tenant ON hosted_sessions(tenant_id, expires_at);
