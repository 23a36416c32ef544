-- How many of a code's reserved attempts are still being compared (taken by a reservation,
-- given back by its verify's outcome or its release): a verify that finds every attempt
-- taken waits while another instance's is still open, whichever instance took the last one,
-- before it answers `attempts_exhausted` (a copy of the right code among them answers
-- `otp_used`). In step with migrations/sqlite/V22__attempts_open.sql.
ALTER TABLE challenges ADD COLUMN attempts_open BIGINT NOT NULL DEFAULT 0;
