-- The retention purge deletes old rows in batches (2,000 at a time, each its own
-- transaction): each batch finds its rows by their time through an index, not by a scan of
-- the whole table (PostgreSQL's plan scanned the table once a batch).
CREATE INDEX sends_at ON sends(at);
CREATE INDEX sms_sends_at ON sms_sends(at);
CREATE INDEX test_inbox_received ON test_inbox(received_at);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries(at);
CREATE INDEX webhook_events_settled ON webhook_events(created_at) WHERE status <> 'pending';
