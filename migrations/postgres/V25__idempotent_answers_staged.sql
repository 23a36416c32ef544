-- The answers a mint under an Idempotency-Key gives for its code's delivery, written in the
-- transaction that stores the code (API.md §9, §19.2): `staged_code` the code's key digest,
-- `staged` the answer for each delivery status, sealed with the data key. A repeat after the
-- claim's holder died (its lease ran out, no answer kept) gets the answer its code's delivery
-- gives — nothing is minted or sent again — unless the message is recorded failed (never
-- sent): then it mints, once. In step with migrations/sqlite/V25__idempotent_answers_staged.sql.
ALTER TABLE idempotency_keys ADD COLUMN staged BYTEA;
ALTER TABLE idempotency_keys ADD COLUMN staged_code BYTEA;
