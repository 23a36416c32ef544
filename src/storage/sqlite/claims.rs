//! SQLite: outcomes claimed once.

use crate::storage::sql;
use rusqlite::params;

use super::{CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::{ClaimStore, StoreError};

impl ClaimStore for SqliteStore {
    fn claim_code(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (tenant, digest) = (tenant.clone(), key_digest.to_vec());
        self.writer.write(move |tx| {
            Ok(tx.execute_cached(
                sql::codes::CLAIM_CODE.sqlite,
                params![tenant.as_str(), digest, now],
            )? == 1)
        })
    }

    fn claim_session(&self, tenant: &TenantId, id: &str, now: Millis) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant.clone(), id.to_string());
        self.writer.write(move |tx| {
            Ok(tx.execute_cached(
                sql::codes::CLAIM_SESSION.sqlite,
                params![tenant.as_str(), id, now],
            )? == 1)
        })
    }
}
