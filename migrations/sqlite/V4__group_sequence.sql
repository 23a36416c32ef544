-- A code's place in its (tenant, recipient, purpose, flavor) group is unique (in step with
-- migrations/postgres/V4__group_sequence.sql).
CREATE UNIQUE INDEX challenges_group_seq ON challenges(tenant_id, email_canonical, purpose, flavor, seq);
DROP INDEX challenges_group;
