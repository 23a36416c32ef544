//! The suppression-list aggregate (API.md §16.1): a tenant's entries, and the count on its
//! row that lets a mint skip the look-up while the list is empty.

use super::StoreError;
use crate::domain::keys::TenantId;
use crate::domain::suppression::{Cursor, Suppression};

pub trait SuppressionStore {
    /// The tenant's entries, newest first, after `after`, at most `limit`.
    fn suppressions(
        &self,
        tenant: &TenantId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Suppression>, StoreError>;
    /// Add an entry; `false` when the recipient is on the list already (it is kept as it
    /// was). The tenant must exist.
    fn suppress(&self, tenant: &TenantId, entry: &Suppression) -> Result<bool, StoreError>;
    /// Remove the recipient's entry; whether there was one.
    fn unsuppress(&self, tenant: &TenantId, recipient: &str) -> Result<bool, StoreError>;
    /// The recipient's entry on the tenant's list, if it has one.
    fn suppression(
        &self,
        tenant: &TenantId,
        recipient: &str,
    ) -> Result<Option<Suppression>, StoreError>;
}
