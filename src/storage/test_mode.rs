//! The test-mode aggregate (API.md §13.1–13.2): a tenant's test recipients and its test
//! inbox. Test codes themselves are codes (see `CodeStore::insert_test_code`).

use super::StoreError;
use crate::domain::keys::TenantId;
use crate::domain::test_mode::TestRecipient;
use crate::domain::Millis;

/// A message for the test inbox, stored with its code.
#[derive(Debug, Clone)]
pub struct InboxEntry {
    /// The recipient's canonical form (what `?to=` is compared with).
    pub recipient: String,
    /// The rendered message, sealed with the data key and bound to the code's key, like an
    /// outbox row.
    pub payload: Vec<u8>,
    /// The test sends a tenant may make per hour (`limits.test_sends_per_hour`; 0: no
    /// limit).
    pub per_hour: u32,
}

/// A message read back from the test inbox.
#[derive(Debug, Clone)]
pub struct InboxRow {
    pub key_digest: Vec<u8>,
    pub payload: Vec<u8>,
    pub received_at: Millis,
}

pub trait TestStore {
    /// The tenant's test recipients, expired ones included (they are inert, and shown).
    fn test_recipients(&self, tenant: &TenantId) -> Result<Vec<TestRecipient>, StoreError>;
    /// Replace the tenant's test recipients and bump its `test_version`; `None`: no such
    /// tenant.
    fn put_test_recipients(
        &self,
        tenant: &TenantId,
        list: &[TestRecipient],
        now: Millis,
    ) -> Result<Option<i64>, StoreError>;
    /// A wrong guess of a test recipient's fixed code (`code_hash`, the key's current one):
    /// one more failure on the exact entry of `recipient` that has that code; at `max` the
    /// entry turns inert and the tenant's `test_version` moves on. True when it turned inert
    /// now.
    fn test_code_failed(
        &self,
        tenant: &TenantId,
        recipient: &str,
        code_hash: &str,
        max: u32,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// The tenant's inbox received after `since`, newest first (only `recipient`'s, if
    /// given), at most [`crate::domain::test_mode::INBOX_KEPT`].
    fn test_inbox(
        &self,
        tenant: &TenantId,
        recipient: Option<&str>,
        since: Millis,
    ) -> Result<Vec<InboxRow>, StoreError>;
}
