//! SQLite: outcomes claimed once.

use rusqlite::params;

use super::{CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::codes::claim_sql as sql;
use crate::storage::tenants::sqlite_placeholders as q;
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
            Ok(tx.execute_cached(&q(sql::CLAIM_CODE), params![tenant.as_str(), digest, now])? == 1)
        })
    }

    fn claim_session(&self, tenant: &TenantId, id: &str, now: Millis) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant.clone(), id.to_string());
        self.writer.write(move |tx| {
            Ok(tx.execute_cached(&q(sql::CLAIM_SESSION), params![tenant.as_str(), id, now])? == 1)
        })
    }
}
