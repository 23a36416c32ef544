-- Each channel's messages are claimed within their own transport's window (API.md §17.7),
-- in step with migrations/postgres/V15__outbox_lanes.sql: the outbox row names its channel,
-- and a claim finds a tenant's due messages of one channel by an index, without walking
-- the other channel's backlog.
ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'email';
UPDATE outbox SET channel = 'sms'
 WHERE key_digest IN (SELECT key_digest FROM challenges WHERE channel = 'sms');
CREATE INDEX outbox_tenant_channel_due ON outbox(tenant_id, channel, due_at);

-- The SMS guard's unverified-per-country count reads only the newest unverified sends, up
-- to the limit, from an index of them (a verified code's send is marked in the verify's
-- transaction): its cost no longer grows with the tenant's SMS of the hour.
ALTER TABLE sms_sends ADD COLUMN verified INTEGER NOT NULL DEFAULT 0;
UPDATE sms_sends SET verified = 1
 WHERE key_digest IN (SELECT key_digest FROM challenges WHERE status = 'verified');
DROP INDEX sms_sends_country;
CREATE INDEX sms_sends_unverified ON sms_sends(tenant_id, country, at) WHERE NOT verified;
