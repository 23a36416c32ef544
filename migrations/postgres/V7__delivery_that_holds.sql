-- Delivery that holds (in step with migrations/sqlite/V7__delivery_that_holds.sql).
UPDATE tenants SET smtp_max_connections = 0 WHERE smtp_max_connections = 8;
ALTER TABLE tenants ADD COLUMN row_version BIGINT NOT NULL DEFAULT 1;
CREATE INDEX outbox_tenant_due ON outbox(tenant_id, due_at);
ALTER TABLE webhooks ADD COLUMN disabled_at BIGINT;
ALTER TABLE webhooks ADD COLUMN disabled_reason TEXT;
CREATE INDEX webhook_events_tenant_due ON webhook_events(tenant_id, due_at) WHERE status = 'pending';
