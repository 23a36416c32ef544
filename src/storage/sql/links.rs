//! The SQL both backends run for magic links, written once with `$n` placeholders.

use crate::storage::links::LINK_COLS;

shared_sql!(
    /// A magic link by its token's digest, of an enabled tenant.
    pub(crate) LINK = ["SELECT ", LINK_COLS,
        " FROM magic_links l JOIN challenges c ON c.key_digest = l.key_digest JOIN tenants t ON \
         t.id = c.tenant_id WHERE l.digest = $1 AND t.enabled"]
);

shared_sql!(
    /// Who confirmed a link: `$1` its digest, `$2` the digest of that browser's page token.
    pub(crate) FINISHED_BY = ["UPDATE magic_links SET finished_by = $2 WHERE digest = $1"]
);
