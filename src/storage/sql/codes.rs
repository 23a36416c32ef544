//! The SQL both backends run for codes, written once with `$n` placeholders.

shared_sql!(
    /// A pending code with the next sequence number of its group.
    pub(crate) INSERT_CHALLENGE =
        "INSERT INTO challenges (key_digest, tenant_id, flavor, email, email_canonical, purpose, seq, code_hash, \
         status, attempts, max_attempts, code_length, created_at, expires_at, \
         delivery_mode, delivery_status, delivery_attempts, sent_at, locale, channel, test, stats_state) \
         VALUES ($1, $2, $3, $4, $5, $6, \
           (SELECT COALESCE(MAX(seq), 0) + 1 FROM challenges \
            WHERE tenant_id = $2 AND email_canonical = $5 AND purpose = $6 AND flavor = $3), \
           $7, 'pending', $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
);

shared_sql!(
    pub(crate) INSERT_MAGIC_LINK =
        "INSERT INTO magic_links (digest, key_digest, return_url, key_sealed, created_at) VALUES \
         ($1, $2, $3, $4, $5)"
);

shared_sql!(
    pub(crate) RELEASE_ATTEMPT =
        "UPDATE challenges SET attempts = attempts - 1, attempt_at = NULL, attempts_open = CASE \
         WHEN attempts_open > 0 THEN attempts_open - 1 ELSE 0 END WHERE key_digest = $1 \
         AND tenant_id = $2 AND attempts > 0 AND status = 'pending' AND attempt_at = $3 \
         AND attempt_by = $4"
);

shared_sql!(
    /// A reserved attempt compared, its outcome in (`$1` key digest, `$2` tenant): no longer
    /// open.
    pub(crate) ATTEMPT_DONE =
        "UPDATE challenges SET attempts_open = attempts_open - 1 WHERE key_digest = $1 AND \
         tenant_id = $2 AND attempts_open > 0"
);

shared_sql!(
    /// The right code compared too late (`$1` key digest, `$2` tenant, `$3` now): its
    /// attempt uncounted, only on a code no longer live (no guess is compared on it again).
    pub(crate) UNCOUNT_TOO_LATE =
        "UPDATE challenges SET attempts = attempts - 1 WHERE key_digest = $1 AND tenant_id = $2 \
         AND attempts > 0 AND NOT (status = 'pending' AND expires_at > $3)"
);

shared_sql!(
    pub(crate) RELEASE_FAILURE =
        "UPDATE recipient_failures SET failures = failures - 1 WHERE tenant_id = $1 AND \
         email_canonical = $2 AND failures > 0 AND window_start <= $3"
);

shared_sql!(
    pub(crate) FINISH_VERIFY =
        "DELETE FROM recipient_failures WHERE tenant_id = $1 AND email_canonical = $2"
);

shared_sql!(pub(crate) CANCEL = concat!(
    "UPDATE challenges SET status = 'cancelled', ended_at = $4 \
     WHERE key_digest = $1 AND tenant_id = $2 AND flavor = $3 AND ",
    super::live_code!("$4")
));

shared_sql!(
    pub(crate) SET_CHALLENGE = "UPDATE challenges SET code_challenge = $2 WHERE key_digest = $1"
);

shared_sql!(
    /// A verified code's outcome, claimed once (`$1` tenant, `$2` key digest, `$3` now).
    pub(crate) CLAIM_CODE =
        "UPDATE challenges SET claimed_at = $3 WHERE tenant_id = $1 AND key_digest = $2 AND \
         status = 'verified' AND claimed_at IS NULL"
);

shared_sql!(
    /// A verified session's outcome, claimed once (`$1` tenant, `$2` stored id, `$3` now,
    /// `$4` the id as a row stored before ids were hashed holds it).
    pub(crate) CLAIM_SESSION =
        "UPDATE hosted_sessions SET claimed_at = $3 WHERE tenant_id = $1 AND id IN ($2, $4) AND \
         status = 'verified' AND claimed_at IS NULL"
);

shared_sql!(
    /// A verified, unclaimed session's code claimed with it (`$1` tenant, `$2` stored id,
    /// `$3` now, `$4` the id): the session's outcome and its key's are one, claimed once by
    /// either route. The key's row is the one both routes take first.
    pub(crate) CLAIM_SESSION_CODE =
        "UPDATE challenges SET claimed_at = $3 WHERE tenant_id = $1 AND claimed_at IS NULL AND \
         key_digest = (SELECT h.key_digest FROM hosted_sessions h WHERE h.tenant_id = $1 AND \
         h.id IN ($2, $4) AND h.status = 'verified' AND h.claimed_at IS NULL)"
);

shared_sql!(
    /// As `CLAIM_SESSION`, unless the session's code was claimed already (by its key).
    pub(crate) CLAIM_SESSION_UNLESS_CODE_CLAIMED =
        "UPDATE hosted_sessions SET claimed_at = $3 WHERE tenant_id = $1 AND id IN ($2, $4) AND \
         status = 'verified' AND claimed_at IS NULL AND NOT EXISTS (SELECT 1 FROM challenges c \
         WHERE c.key_digest = hosted_sessions.key_digest AND c.claimed_at IS NOT NULL)"
);

shared_sql!(
    /// A session's code's claim made at `$3` with the session taken back (`$1` tenant, `$2`
    /// stored id, `$4` the id).
    pub(crate) UNCLAIM_SESSION_CODE =
        "UPDATE challenges SET claimed_at = NULL WHERE tenant_id = $1 AND claimed_at = $3 AND \
         key_digest = (SELECT h.key_digest FROM hosted_sessions h WHERE h.tenant_id = $1 AND \
         h.id IN ($2, $4))"
);

shared_sql!(
    /// A code's claim made at `$3` taken back (`$1` tenant, `$2` key digest).
    pub(crate) UNCLAIM_CODE =
        "UPDATE challenges SET claimed_at = NULL WHERE tenant_id = $1 AND key_digest = $2 AND \
         claimed_at = $3"
);

shared_sql!(
    /// A session's claim made at `$3` taken back (`$1` tenant, `$2` stored id, `$4` the id).
    pub(crate) UNCLAIM_SESSION =
        "UPDATE hosted_sessions SET claimed_at = NULL WHERE tenant_id = $1 AND id IN ($2, $4) \
         AND claimed_at = $3"
);

shared_sql!(
    /// `pending` → `verified` by `$4` (`code`, or `link`, which needs an attempt left) if
    /// still pending and unexpired at `$3`; what the code counts under.
    pub(crate) VERIFY = [
        "UPDATE challenges SET status = 'verified', verified_at = $3, ended_at = $3, \
         verified_via = $4 WHERE key_digest = $1 AND tenant_id = $2 AND status = 'pending' \
         AND expires_at > $3 AND ($4 <> 'link' OR ",
        super::attempts_left!(""),
        ") RETURNING ",
        crate::storage::stats::TALLY_COLS,
    ]
);

shared_sql!(
    /// The enabled tenant a code of a flavour belongs to.
    pub(crate) OWNER =
        "SELECT c.tenant_id FROM challenges c JOIN tenants t ON t.id = c.tenant_id WHERE \
         c.key_digest = $1 AND c.flavor = $2 AND t.enabled"
);
