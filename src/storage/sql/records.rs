//! The SQL both backends run for records, written once with `$n` placeholders.

use crate::storage::cells::AUDIT_COLS;

shared_sql!(
    /// At most `$2` of them: the purge deletes in batches.
    pub(crate) PURGE_CHALLENGES =
        "DELETE FROM challenges WHERE key_digest IN (SELECT key_digest FROM challenges WHERE \
         ((ended_at IS NOT NULL AND ended_at < $1) OR expires_at < $1) \
         AND NOT (status IN ('pending', 'failed') AND stats_state = 1) LIMIT $2) \
         AND ((ended_at IS NOT NULL AND ended_at < $1) OR expires_at < $1) \
         AND NOT (status IN ('pending', 'failed') AND stats_state = 1)"
);

shared_sql!(
    /// At most `$2` of them: the purge deletes in batches.
    pub(crate) PURGE_SENDS =
        "DELETE FROM sends WHERE id IN (SELECT id FROM sends WHERE at < $1 LIMIT $2) AND at < $1"
);

shared_sql!(
    pub(crate) PURGE_TENANT_SEND_MINUTES =
        "DELETE FROM tenant_send_minutes WHERE minute < $1"
);

shared_sql!(
    pub(crate) PURGE_RECIPIENT_FAILURES =
        "DELETE FROM recipient_failures WHERE window_start < $1"
);

shared_sql!(
    pub(crate) PURGE_TEST_SEND_MINUTES = "DELETE FROM test_send_minutes WHERE minute < $1"
);

shared_sql!(
    /// At most `$2` of them: the purge deletes in batches.
    pub(crate) PURGE_TEST_INBOX =
        "DELETE FROM test_inbox WHERE id IN (SELECT id FROM test_inbox WHERE received_at < $1 \
         LIMIT $2) AND received_at < $1"
);

shared_sql!(
    /// At most `$2` of them: the purge deletes in batches.
    pub(crate) PURGE_HOSTED_SESSIONS =
        "DELETE FROM hosted_sessions WHERE id IN (SELECT id FROM hosted_sessions WHERE \
         expires_at < $1 LIMIT $2) AND expires_at < $1"
);

shared_sql!(
    pub(crate) SECRET_EXISTS =
        "SELECT EXISTS(SELECT 1 FROM tenant_secrets WHERE digest = $1)"
);

shared_sql!(
    /// Whether `import-otpmint` imported it before (`$1` kind, `$2` digest).
    pub(crate) IMPORTED_BEFORE =
        "SELECT EXISTS(SELECT 1 FROM legacy_imports WHERE kind = $1 AND digest = $2)"
);

shared_sql!(
    /// What `import-otpmint` imported (or found present), remembered for its re-runs.
    pub(crate) REMEMBER_IMPORT =
        "INSERT INTO legacy_imports (kind, digest, imported_at) VALUES ($1, $2, $3) ON \
         CONFLICT (kind, digest) DO NOTHING"
);

shared_sql!(
    pub(crate) CODE_EXISTS =
        "SELECT EXISTS(SELECT 1 FROM challenges WHERE key_digest = $1)"
);

shared_sql!(
    pub(crate) TENANT_OF_SECRET =
        "SELECT tenant_id FROM tenant_secrets WHERE digest = $1"
);

shared_sql!(
    pub(crate) APPEND_AUDIT =
        "INSERT INTO audit (tenant_id, at, event, recipient, outcome, client_ip, request_id) \
         SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1)"
);

shared_sql!(
    /// How many times an event is stored, to the letter (found through the index on `at`);
    /// -1 when its tenant is gone.
    pub(crate) AUDIT_STORED =
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM tenants WHERE id = $1) THEN \
         (SELECT COUNT(*) FROM audit WHERE at = $2 AND tenant_id = $1 AND event = $3 \
         AND recipient = $4 AND outcome = $5 AND client_ip = $6 AND request_id = $7) \
         ELSE -1 END"
);

shared_sql!(
    pub(crate) AUDIT_PAGE = ["SELECT ", AUDIT_COLS,
        " FROM audit WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"]
);

shared_sql!(
    /// At most `$2` of them: the purge deletes in batches.
    pub(crate) PURGE_AUDIT =
        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < $1 LIMIT $2) AND at < $1"
);

shared_sql!(
    /// The newest event's id (0: none yet).
    pub(crate) NEWEST_AUDIT_ID = "SELECT COALESCE(MAX(id), 0) FROM audit"
);

shared_sql!(
    /// What a copy's target holds already: tenants, a keyring.
    pub(crate) IMPORT_SNAPSHOT =
        "SELECT EXISTS(SELECT 1 FROM tenants), EXISTS(SELECT 1 FROM keyring)"
);
