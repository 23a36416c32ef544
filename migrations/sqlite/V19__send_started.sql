-- Whether an async message's lease was taken by a claim whose send has not begun yet (it
-- waits for a session of its transport's window); the send clears it before anything
-- leaves. A lease that ran out while it was set is given back by the sweep and the message
-- is sent by another sender; one that ran out after is an interrupted send, recorded
-- `unknown` (API.md §19.2). Rows leased before this column existed, and leases taken by a
-- process of an earlier version, read as begun: the side that never sends twice. In step
-- with migrations/postgres/V19__send_started.sql.
ALTER TABLE outbox ADD COLUMN unstarted INTEGER NOT NULL DEFAULT 0;
