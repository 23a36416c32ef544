-- A verified magic link sends back only the browser that confirmed it (API.md §17.2), in step
-- with migrations/postgres/V16__link_finisher.sql: a digest of that browser's page token
-- (never its cookie), written in the transaction that verifies the code.
ALTER TABLE magic_links ADD COLUMN finished_by BLOB;
