//! The SQL both backends run for suppressions, written once with `$n` placeholders.

use crate::storage::cells::SUPPRESSION_COLS;

shared_sql!(
    pub(crate) PAGE = ["SELECT ", SUPPRESSION_COLS,
        " FROM suppressions WHERE tenant_id = $1 AND ($2 OR created_at < $3 OR (created_at = $3 \
         AND recipient < $4)) ORDER BY created_at DESC, recipient DESC LIMIT $5"]
);

shared_sql!(
    pub(crate) INSERT =
        "INSERT INTO suppressions (tenant_id, recipient, reason, source, created_at) VALUES ($1, \
         $2, $3, $4, $5) ON CONFLICT (tenant_id, recipient) DO NOTHING"
);

shared_sql!(pub(crate) DELETE = "DELETE FROM suppressions WHERE tenant_id = $1 AND recipient = $2");

shared_sql!(pub(crate) COUNT_UP = "UPDATE tenants SET suppressed = suppressed + 1 WHERE id = $1");

shared_sql!(
    pub(crate) COUNT_DOWN =
        "UPDATE tenants SET suppressed = suppressed - 1 WHERE id = $1 AND suppressed > 0"
);

shared_sql!(
    pub(crate) ONE = ["SELECT ", SUPPRESSION_COLS,
        " FROM suppressions WHERE tenant_id = $1 AND recipient = $2"]
);
