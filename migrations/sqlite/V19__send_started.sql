-- When the holder of an async message's lease began its send (took a session of the
-- transport's window; NULL: not yet, or its lease was given back). A lease that ran out
-- with no send begun is given back by the sweep and the message is sent by another sender;
-- only one whose send had begun is recorded `unknown` (API.md §19.2). In step with
-- migrations/postgres/V19__send_started.sql.
ALTER TABLE outbox ADD COLUMN started_at INTEGER;
