-- Delivery that holds (API.md §11) and tenant changes without lost updates (§6.30), in step
-- with migrations/postgres/V7__delivery_that_holds.sql.

-- A tenant's smtp.max_connections is a ceiling; 0 means the server's default
-- (smtp.max_connections_per_tenant), so tenants that never chose one follow it. The old
-- default, 8, was written into every tenant that did not choose: it becomes 0.
UPDATE tenants SET smtp_max_connections = 0 WHERE smtp_max_connections = 8;

-- Bumped by every change of the row: a change applies only to the version it read.
ALTER TABLE tenants ADD COLUMN row_version INTEGER NOT NULL DEFAULT 1;

-- Claims go tenant by tenant, each tenant's due rows oldest first.
CREATE INDEX outbox_tenant_due ON outbox(tenant_id, due_at);

-- An endpoint that answered 410 Gone is disabled until the tenant PUTs it again.
ALTER TABLE webhooks ADD COLUMN disabled_at INTEGER;
ALTER TABLE webhooks ADD COLUMN disabled_reason TEXT;

CREATE INDEX webhook_events_tenant_due ON webhook_events(tenant_id, due_at) WHERE status = 'pending';
