//! PostgreSQL: magic links.

use super::PgStore;
use crate::storage::links::link_from;
use crate::storage::{LinkStore, LinkView, StoreError};

impl LinkStore for PgStore {
    fn link(&self, digest: &[u8]) -> Result<Option<LinkView>, StoreError> {
        self.conn()?
            .db()
            .row_opt(crate::storage::sql::links::LINK.pg, &[&digest], link_from)
    }
}
