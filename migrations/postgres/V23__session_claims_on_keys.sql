-- A hosted session's code shares the session's outcome (API.md §17.2): its key takes the
-- session's code challenge when it becomes the session's code, and a claim by either route
-- spends both. Rows written before that release lack both links: a session verified then left
-- its key claimable without the session's code_verifier, and a session claimed then left its
-- key claimable once more. Both are carried over to the keys here. In step with
-- migrations/sqlite/V23__session_claims_on_keys.sql.
UPDATE challenges SET code_challenge = (
    SELECT MIN(h.code_challenge) FROM hosted_sessions h
    WHERE h.key_digest = challenges.key_digest AND h.tenant_id = challenges.tenant_id
)
WHERE code_challenge IS NULL AND key_digest IN (
    SELECT key_digest FROM hosted_sessions WHERE code_challenge IS NOT NULL
);
UPDATE challenges SET claimed_at = (
    SELECT MIN(h.claimed_at) FROM hosted_sessions h
    WHERE h.key_digest = challenges.key_digest AND h.tenant_id = challenges.tenant_id
)
WHERE claimed_at IS NULL AND key_digest IN (
    SELECT key_digest FROM hosted_sessions WHERE claimed_at IS NOT NULL
);
