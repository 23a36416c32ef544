//! The SQL both backends run for keyring, written once with `$n` placeholders.

use crate::storage::cells::KEY_COLS;

shared_sql!(
    pub(crate) KEYRING = ["SELECT ", KEY_COLS, " FROM keyring ORDER BY kind, version"]
);

shared_sql!(pub(crate) KEYRING_ROWS = "SELECT COUNT(*) FROM keyring");

shared_sql!(pub(crate) ANY_TENANT = "SELECT EXISTS(SELECT 1 FROM tenants)");

shared_sql!(
    pub(crate) INSERT_KEY =
        "INSERT INTO keyring (kind, version, wrapped, kek_id, active, created_at) VALUES ($1, $2, \
         $3, $4, $5, $6)"
);

shared_sql!(
    pub(crate) REWRAP_KEY =
        "UPDATE keyring SET wrapped = $3, kek_id = $4 WHERE kind = $1 AND version = $2 AND kek_id \
         = $5"
);

shared_sql!(
    pub(crate) RESEAL_WEBHOOK_SECRET =
        "UPDATE webhooks SET secret = $3 WHERE tenant_id = $1 AND secret = $2"
);

shared_sql!(
    /// `$2`: false.
    pub(crate) DEACTIVATE_KEYS = "UPDATE keyring SET active = $2 WHERE kind = $1"
);
