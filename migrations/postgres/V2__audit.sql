-- Who minted and verified what (in step with migrations/sqlite/V2__audit.sql).
CREATE TABLE audit (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    at          BIGINT  NOT NULL,
    event       TEXT    NOT NULL,
    recipient   TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    client_ip   TEXT    NOT NULL,
    request_id  TEXT    NOT NULL
);
CREATE INDEX audit_tenant ON audit(tenant_id, id);
CREATE INDEX audit_at ON audit(at);
