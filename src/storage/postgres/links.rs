//! PostgreSQL: magic links.

use super::PgStore;
use crate::storage::links::{link_from, LINK_COLS};
use crate::storage::{LinkStore, LinkView, StoreError};

impl LinkStore for PgStore {
    fn link(&self, digest: &[u8]) -> Result<Option<LinkView>, StoreError> {
        self.conn()?.db().row_opt(
            &format!(
                "SELECT {LINK_COLS} FROM magic_links l JOIN challenges c ON c.key_digest = l.key_digest \
                 JOIN tenants t ON t.id = c.tenant_id WHERE l.digest = $1 AND t.enabled"
            ),
            &[&digest],
            link_from,
        )
    }
}
