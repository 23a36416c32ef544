-- Who took a code's last attempt, and when: a verify that finds every attempt taken while
-- another instance's verify of the key may still be comparing waits for its outcome before
-- it answers (`otp_used` for a copy of the right code, not `attempts_exhausted`). In step
-- with migrations/sqlite/V18__verify_in_flight.sql.
ALTER TABLE challenges ADD COLUMN attempt_at BIGINT;
ALTER TABLE challenges ADD COLUMN attempt_by TEXT;
