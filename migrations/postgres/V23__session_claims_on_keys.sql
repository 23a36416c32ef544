-- A hosted session's code shares the session's outcome (API.md §17.2): its key takes the
-- session's code challenge when it becomes the session's code, and a claim by either route
-- spends both. Rows written before that release lack both links: a session verified then left
-- its key claimable without the session's code_verifier, and a session claimed then left its
-- key claimable once more. Both are carried over to the keys here, each session read once
-- (hosted_sessions has no index on key_digest: a lookup per key would read them all again)
-- and each key found by its primary key. In step with
-- migrations/sqlite/V23__session_claims_on_keys.sql.
UPDATE challenges SET code_challenge = h.code_challenge
FROM (
    SELECT tenant_id, key_digest, MIN(code_challenge) AS code_challenge FROM hosted_sessions
    WHERE key_digest IS NOT NULL AND code_challenge IS NOT NULL
    GROUP BY tenant_id, key_digest
) AS h
WHERE challenges.key_digest = h.key_digest AND challenges.tenant_id = h.tenant_id
    AND challenges.code_challenge IS NULL;
UPDATE challenges SET claimed_at = h.claimed_at
FROM (
    SELECT tenant_id, key_digest, MIN(claimed_at) AS claimed_at FROM hosted_sessions
    WHERE key_digest IS NOT NULL AND claimed_at IS NOT NULL
    GROUP BY tenant_id, key_digest
) AS h
WHERE challenges.key_digest = h.key_digest AND challenges.tenant_id = h.tenant_id
    AND challenges.claimed_at IS NULL;
