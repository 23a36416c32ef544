-- Messages a tenant can brand and localise (API.md §8), in step with
-- migrations/postgres/V5__templates.sql. templates_version is bumped with every template
-- change, so a process's cache of a tenant's templates knows when it is stale.
ALTER TABLE tenants ADD COLUMN default_locale TEXT NOT NULL DEFAULT 'en';
ALTER TABLE tenants ADD COLUMN templates_version INTEGER NOT NULL DEFAULT 0;
-- The locale a code's message was written in (NULL for codes minted before templates).
ALTER TABLE challenges ADD COLUMN locale TEXT;

CREATE TABLE templates (
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    locale      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    html        TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, locale)
);
