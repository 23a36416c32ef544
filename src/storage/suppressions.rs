//! The suppression-list aggregate (API.md §16.1): a tenant's entries, and the count on its
//! row that lets a mint skip the look-up while the list is empty.

use super::cells::suppression_from;
use super::engine::{args, Engine};
use super::sql::{suppressions as sql, Arg};
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
    /// Remove the recipient's entries under these keys (its key, and older ones), in one
    /// transaction; the keys that had one.
    fn unsuppress(&self, tenant: &TenantId, keys: &[String]) -> Result<Vec<String>, StoreError>;
    /// The recipient's entry on the tenant's list, if it has one.
    fn suppression(
        &self,
        tenant: &TenantId,
        recipient: &str,
    ) -> Result<Option<Suppression>, StoreError>;
}

impl<E: Engine> SuppressionStore for E {
    fn suppressions(
        &self,
        tenant: &TenantId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Suppression>, StoreError> {
        let (at, recipient) = after.map_or((0, ""), |c| (c.created_at, c.recipient.as_str()));
        let page = args![
            tenant.as_str(),
            after.is_none(),
            at,
            recipient,
            limit as i64
        ];
        self.rows(sql::PAGE, page, |r| suppression_from(r))
    }

    fn suppress(&self, tenant: &TenantId, entry: &Suppression) -> Result<bool, StoreError> {
        let (t, e) = (tenant.to_string(), entry.clone());
        self.transact(move |tx| {
            let row = args![
                t.as_str(),
                e.recipient,
                e.reason.as_str(),
                e.source,
                e.created_at
            ];
            let added = tx.exec(sql::INSERT, row)? == 1;
            if added {
                tx.exec(sql::COUNT_UP, args![t.as_str()])?;
            }
            Ok(added)
        })
    }

    fn unsuppress(&self, tenant: &TenantId, keys: &[String]) -> Result<Vec<String>, StoreError> {
        let keys = keys.to_vec();
        let tenant = tenant.as_str().to_string();
        self.transact(move |tx| {
            let mut removed = Vec::new();
            for k in &keys {
                let key = [Arg::from(tenant.as_str()), Arg::from(k.as_str())];
                if tx.exec(sql::DELETE, &key)? == 1 {
                    tx.exec(sql::COUNT_DOWN, &key[..1])?;
                    removed.push(k.clone());
                }
            }
            Ok(removed)
        })
    }

    fn suppression(
        &self,
        tenant: &TenantId,
        recipient: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        self.row_opt(sql::ONE, args![tenant.as_str(), recipient], |r| {
            suppression_from(r)
        })
    }
}
