-- A code's place in its (tenant, recipient, purpose, flavor) group is unique: two mints
-- can never share a sequence number, so superseding always leaves one newest code.
CREATE UNIQUE INDEX challenges_group_seq ON challenges(tenant_id, email_canonical, purpose, flavor, seq);
DROP INDEX challenges_group;
