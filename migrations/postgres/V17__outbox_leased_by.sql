-- The leases one process holds, found without reading the whole outbox: its stray leases
-- are given back at every sweep (every 5 s) and all of them at shutdown. In step with
-- migrations/sqlite/V17__outbox_leased_by.sql.
CREATE INDEX outbox_leased_by ON outbox (leased_by) WHERE leased_by IS NOT NULL;
