//! PostgreSQL: outcomes claimed once.

use super::PgStore;
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::sql;
use crate::storage::{ClaimStore, StoreError};

impl ClaimStore for PgStore {
    fn claim_code(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError> {
        let t = tenant.as_str();
        Ok(self
            .conn()?
            .db()
            .execute(sql::codes::CLAIM_CODE.pg, &[&t, &key_digest, &now])?
            == 1)
    }

    fn claim_session(&self, tenant: &TenantId, id: &str, now: Millis) -> Result<bool, StoreError> {
        let t = tenant.as_str();
        Ok(self
            .conn()?
            .db()
            .execute(sql::codes::CLAIM_SESSION.pg, &[&t, &id, &now])?
            == 1)
    }
}
