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

/// The SQL both backends run as written (`$N` placeholders; SQLite takes them as `?N`).
pub(crate) mod sql {
    pub const PAGE: &str = "SELECT recipient, reason, source, created_at FROM suppressions \
         WHERE tenant_id = $1 AND ($2 OR created_at < $3 OR (created_at = $3 AND recipient < $4)) \
         ORDER BY created_at DESC, recipient DESC LIMIT $5";
    pub const INSERT: &str =
        "INSERT INTO suppressions (tenant_id, recipient, reason, source, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, recipient) DO NOTHING";
    pub const DELETE: &str = "DELETE FROM suppressions WHERE tenant_id = $1 AND recipient = $2";
    pub const COUNT_UP: &str = "UPDATE tenants SET suppressed = suppressed + 1 WHERE id = $1";
    pub const COUNT_DOWN: &str =
        "UPDATE tenants SET suppressed = suppressed - 1 WHERE id = $1 AND suppressed > 0";
    pub const ONE: &str = "SELECT recipient, reason, source, created_at FROM suppressions \
         WHERE tenant_id = $1 AND recipient = $2";
}
