//! Outcomes claimed once (API.md §17.2): a verified key, or a hosted session and its key —
//! one outcome, claimed by either route, the key's row taken first by both.

use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::engine::args;
use crate::storage::StoreError;

/// Outcomes claimed once (API.md §17.2).
pub trait ClaimStore {
    /// Mark a verified, unclaimed code of `tenant` claimed; false when it is not verified
    /// or was claimed already.
    fn claim_code(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Mark a verified, unclaimed hosted session of `tenant` claimed; false otherwise.
    fn claim_session(&self, tenant: &TenantId, id: &str, now: Millis) -> Result<bool, StoreError>;
    /// Take back the claim of a code that `claim_code` made at `at` (a claim that committed
    /// after its request answered 503); a claim made at another time stays.
    fn unclaim_code(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        at: Millis,
    ) -> Result<(), StoreError>;
    /// As [`ClaimStore::unclaim_code`], for a hosted session.
    fn unclaim_session(&self, tenant: &TenantId, id: &str, at: Millis) -> Result<(), StoreError>;
}

impl<E: crate::storage::engine::Engine> ClaimStore for E {
    fn claim_code(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError> {
        let row = [tenant.as_str().into(), key_digest.into(), now.into()];
        Ok(self.exec_one(crate::storage::sql::codes::CLAIM_CODE, &row)? == 1)
    }

    fn claim_session(&self, tenant: &TenantId, id: &str, now: Millis) -> Result<bool, StoreError> {
        use crate::storage::sql::codes::{
            CLAIM_SESSION, CLAIM_SESSION_CODE, CLAIM_SESSION_UNLESS_CODE_CLAIMED,
        };
        let stored = crate::storage::hosted::stored_session_id(id);
        let row = args![tenant.as_str(), stored, now, id].to_vec();
        self.transact(move |tx| {
            // Its code first (the row a claim by key takes), then the session: unless the
            // code was claimed already, by its key.
            let code = tx.exec(CLAIM_SESSION_CODE, &row)? == 1;
            let q = if code {
                CLAIM_SESSION
            } else {
                CLAIM_SESSION_UNLESS_CODE_CLAIMED
            };
            Ok(tx.exec(q, &row)? == 1)
        })
    }

    fn unclaim_code(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        at: Millis,
    ) -> Result<(), StoreError> {
        let row = [tenant.as_str().into(), key_digest.into(), at.into()];
        self.exec_one(crate::storage::sql::codes::UNCLAIM_CODE, &row)
            .map(drop)
    }

    fn unclaim_session(&self, tenant: &TenantId, id: &str, at: Millis) -> Result<(), StoreError> {
        use crate::storage::sql::codes::{UNCLAIM_SESSION, UNCLAIM_SESSION_CODE};
        let stored = crate::storage::hosted::stored_session_id(id);
        let row = args![tenant.as_str(), stored, at, id].to_vec();
        self.transact(move |tx| {
            tx.exec(UNCLAIM_SESSION_CODE, &row)?;
            tx.exec(UNCLAIM_SESSION, &row).map(drop)
        })
    }
}
