//! SQLite: magic links.

use super::{CachedSql, SqliteStore};
use crate::storage::links::link_from;
use crate::storage::{LinkStore, LinkView, StoreError};

impl LinkStore for SqliteStore {
    fn link(&self, digest: &[u8]) -> Result<Option<LinkView>, StoreError> {
        self.conn()?
            .row_opt(crate::storage::sql::links::LINK.sqlite, [digest], |r| {
                link_from(r)
            })
    }
}
