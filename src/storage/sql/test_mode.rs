//! The SQL both backends run for test mode, written once with `$n` placeholders.

use crate::storage::cells::{INBOX_COLS, TEST_RECIPIENT_COLS};

shared_sql!(
    pub(crate) INSERT_INBOX =
        "INSERT INTO test_inbox (tenant_id, key_digest, recipient, message, received_at) VALUES \
         ($1, $2, $3, $4, $5)"
);

shared_sql!(
    pub(crate) TRIM_INBOX =
        "DELETE FROM test_inbox WHERE tenant_id = $1 AND id <= (SELECT id FROM test_inbox WHERE \
         tenant_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)"
);

shared_sql!(
    pub(crate) NEW_TEST_VERSION =
        "UPDATE tenants SET test_version = test_version + 1, row_version = row_version + 1 WHERE \
         id = $1 RETURNING test_version"
);

shared_sql!(
    pub(crate) CLEAR_TEST_RECIPIENTS =
        "DELETE FROM test_recipients WHERE tenant_id = $1"
);

shared_sql!(
    pub(crate) ADD_TEST_RECIPIENT =
        "INSERT INTO test_recipients (tenant_id, pattern, code_hash, code_length, expires_at, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6)"
);

shared_sql!(
    /// The fixed codes of `$2`'s exact entry (`$1` tenant; `$3` its other spelling, a number
    /// stored before numbers had one, else `$2`), and when each turned inert.
    pub(crate) FIXED_CODES =
        "SELECT code_hash, disabled_at FROM test_recipients WHERE tenant_id = $1 AND pattern IN \
         ($2, $3) AND code_hash IS NOT NULL"
);

shared_sql!(
    /// A wrong guess of a fixed code: one more failure on its entry, which turns inert at the
    /// budget. `$1` tenant, `$2` recipient, `$3` code hash, `$4` budget, `$5` now, `$6` the
    /// recipient's other spelling (a number stored before numbers had one; else `$2`).
    pub(crate) CODE_FAILED =
        "UPDATE test_recipients SET failures = failures + 1, disabled_at = CASE WHEN failures + 1 \
         >= CAST($4 AS BIGINT) THEN $5 ELSE disabled_at END WHERE tenant_id = $1 AND pattern IN \
         ($2, $6) AND code_hash = $3 AND disabled_at IS NULL RETURNING disabled_at"
);

/// The tenant's row, locked until the transaction ends on PostgreSQL in the mode its
/// `test_version` update takes: a wrong guess at a fixed code takes it before its entry's
/// row, in the order a PUT of the list takes them (the other order deadlocks the two).
/// SQLite's single writer runs one at a time.
pub(crate) const TENANT_TEST_LOCKED: super::Shared = super::Shared {
    sqlite: "SELECT 1 FROM tenants WHERE id = ?1",
    pg: "SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
};

shared_sql!(
    pub(crate) BUMP_TEST_VERSION =
        "UPDATE tenants SET test_version = test_version + 1 WHERE id = $1"
);

shared_sql!(
    /// A tenant's test recipients.
    pub(crate) TEST_RECIPIENTS = ["SELECT ", TEST_RECIPIENT_COLS,
        " FROM test_recipients WHERE tenant_id = $1 ORDER BY created_at, pattern"]
);

shared_sql!(
    /// A tenant's test inbox since `$2`, newest first, at most `$4`; `$3`: one recipient's
    /// only (NULL: all).
    pub(crate) INBOX = ["SELECT ", INBOX_COLS,
        " FROM test_inbox WHERE tenant_id = $1 AND received_at > $2 AND (CAST($3 AS TEXT) IS NULL \
         OR recipient = $3) ORDER BY id DESC LIMIT $4"]
);
