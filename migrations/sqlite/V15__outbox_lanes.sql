-- Each channel's messages are claimed within their own transport's window (API.md §17.7),
-- in step with migrations/postgres/V15__outbox_lanes.sql: the outbox row names its channel,
-- and a claim finds a tenant's due messages of one channel by an index, without walking
-- the other channel's backlog.
ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'email';
UPDATE outbox SET channel = 'sms'
 WHERE key_digest IN (SELECT key_digest FROM challenges WHERE channel = 'sms');
CREATE INDEX outbox_tenant_channel_due ON outbox(tenant_id, channel, due_at);
