-- Magic links (API.md §14.2), in step with migrations/postgres/V10__magic_links.sql.

-- The return URL prefixes a tenant allows, one per line ('' : none).
ALTER TABLE tenants ADD COLUMN allowed_return_urls TEXT NOT NULL DEFAULT '';

-- How a verified code was verified: code or link.
ALTER TABLE challenges ADD COLUMN verified_via TEXT;

-- A link verifies its code's key. The token is stored only as a digest; the shareable key
-- (for the redirect) only sealed with the data key, bound to the link.
CREATE TABLE magic_links (
    digest      BLOB    PRIMARY KEY,
    key_digest  BLOB    NOT NULL REFERENCES challenges(key_digest) ON DELETE CASCADE,
    return_url  TEXT    NOT NULL,
    key_sealed  BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX magic_links_key ON magic_links(key_digest);
