-- What `otpmint import-otpmint` imported, by digest: a tenant's secret key (`tenant`) and a
-- code's shareable key (`code`). A re-run skips what is here, also once the code was used and
-- purged or the tenant deleted, so an import never brings back a code that ended or a tenant
-- an admin removed. In step with migrations/sqlite/V20__legacy_imports.sql.
CREATE TABLE legacy_imports (
    kind TEXT NOT NULL,
    digest BYTEA NOT NULL,
    imported_at BIGINT NOT NULL,
    PRIMARY KEY (kind, digest)
);
