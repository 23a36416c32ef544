//! The SQL both backends run for hosted, written once with `$n` placeholders. A session is
//! found by its stored id ([`crate::storage::hosted::stored_session_id`]) or by the id
//! itself (a row stored before ids were hashed, until it is purged).

use crate::storage::hosted::{SESSION_COLS, SESSION_FROM};

shared_sql!(
    pub(crate) INSERT_SESSION =
        "INSERT INTO hosted_sessions (id, tenant_id, email, purpose, locale, return_url, status, \
         created_at, expires_at, code_challenge) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8, \
         $9)"
);

shared_sql!(
    /// Only a code still pending: of two sends at once (a double click), the one whose mint
    /// the other superseded never becomes the session's code, whichever is stored last.
    pub(crate) SET_SESSION_CODE =
        "UPDATE hosted_sessions SET email = $2, key_digest = $3, key_sealed = $4 WHERE id IN ($1, \
         $5) AND status = 'open' AND (email IS NULL OR email = $2) AND EXISTS (SELECT 1 FROM \
         challenges c WHERE c.key_digest = $3 AND c.status = 'pending')"
);

shared_sql!(
    /// The session's code challenge given to its code (`$1` stored id, `$2` the id, `$3`
    /// key digest): the key's outcome is the session's, claimed once with its verifier by
    /// either route (API.md §17.2).
    pub(crate) SESSION_CHALLENGE_TO_CODE =
        "UPDATE challenges SET code_challenge = (SELECT h.code_challenge FROM hosted_sessions h \
         WHERE h.id IN ($1, $2) AND h.key_digest = $3) WHERE key_digest = $3"
);

shared_sql!(
    pub(crate) FINISH_SESSION =
        "UPDATE hosted_sessions SET status = 'verified', verified_at = $2, finished_by = $4 WHERE \
         id IN ($1, $5) AND status = 'open' AND key_digest = $3"
);

shared_sql!(
    pub(crate) LOGO =
        "SELECT l.png FROM tenant_logos l JOIN tenants t ON t.id = l.tenant_id WHERE l.tenant_id \
         = $1 AND t.enabled"
);

shared_sql!(pub(crate) HAS_LOGO = "SELECT EXISTS(SELECT 1 FROM tenant_logos WHERE tenant_id = $1)");

shared_sql!(
    pub(crate) PUT_LOGO =
        "INSERT INTO tenant_logos (tenant_id, png, updated_at) SELECT id, $2, $3 FROM tenants \
         WHERE id = $1 ON CONFLICT (tenant_id) DO UPDATE SET png = excluded.png, updated_at = \
         excluded.updated_at"
);

shared_sql!(
    pub(crate) DELETE_LOGO = "DELETE FROM tenant_logos WHERE tenant_id = $1"
);

shared_sql!(
    /// A hosted session, by its stored id (`$1`) or, stored before ids were hashed, the
    /// id itself (`$2`).
    pub(crate) SESSION = ["SELECT ", SESSION_COLS, SESSION_FROM, " WHERE h.id IN ($1, $2)"]
);
