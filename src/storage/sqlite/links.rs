//! SQLite: magic links.

use super::{CachedSql, SqliteStore};
use crate::storage::links::{link_from, LINK_COLS};
use crate::storage::{LinkStore, LinkView, StoreError};

impl LinkStore for SqliteStore {
    fn link(&self, digest: &[u8]) -> Result<Option<LinkView>, StoreError> {
        self.conn()?.row_opt(
            &format!(
                "SELECT {LINK_COLS} FROM magic_links l JOIN challenges c ON c.key_digest = l.key_digest \
                 JOIN tenants t ON t.id = c.tenant_id WHERE l.digest = ?1 AND t.enabled = 1"
            ),
            [digest],
            |r| link_from(r),
        )
    }
}
