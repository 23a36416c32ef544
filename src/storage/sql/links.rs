//! The SQL both backends run for magic links, written once with `$n` placeholders.

use crate::storage::links::LINK_COLS;

shared_sql!(
    /// A magic link by its token's digest, of an enabled tenant.
    pub(crate) LINK = ["SELECT ", LINK_COLS,
        " FROM magic_links l JOIN challenges c ON c.key_digest = l.key_digest JOIN tenants t ON \
         t.id = c.tenant_id WHERE l.digest = $1 AND t.enabled"]
);
