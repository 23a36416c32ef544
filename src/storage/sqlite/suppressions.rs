//! SQLite: the suppression list.

use crate::storage::sql;
use rusqlite::params;

use super::{CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::suppression::{Cursor, Suppression};
use crate::storage::cells::suppression_from;
use crate::storage::{StoreError, SuppressionStore};

impl SuppressionStore for SqliteStore {
    fn suppressions(
        &self,
        tenant: &TenantId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Suppression>, StoreError> {
        let (at, recipient) = after.map_or((0, ""), |c| (c.created_at, c.recipient.as_str()));
        self.conn()?.rows(
            sql::suppressions::PAGE.sqlite,
            params![
                tenant.as_str(),
                after.is_none(),
                at,
                recipient,
                limit as i64
            ],
            |r| suppression_from(r),
        )
    }

    fn suppress(&self, tenant: &TenantId, entry: &Suppression) -> Result<bool, StoreError> {
        let (tenant, e) = (tenant.clone(), entry.clone());
        self.writer.write(move |tx| {
            let added = tx.execute_cached(
                sql::suppressions::INSERT.sqlite,
                params![
                    tenant.as_str(),
                    e.recipient,
                    e.reason.as_str(),
                    e.source,
                    e.created_at
                ],
            )? == 1;
            if added {
                tx.execute_cached(sql::suppressions::COUNT_UP.sqlite, [tenant.as_str()])?;
            }
            Ok(added)
        })
    }

    fn unsuppress(&self, tenant: &TenantId, recipient: &str) -> Result<bool, StoreError> {
        let (tenant, recipient) = (tenant.clone(), recipient.to_string());
        self.writer.write(move |tx| {
            let removed = tx.execute_cached(
                sql::suppressions::DELETE.sqlite,
                params![tenant.as_str(), recipient],
            )? == 1;
            if removed {
                tx.execute_cached(sql::suppressions::COUNT_DOWN.sqlite, [tenant.as_str()])?;
            }
            Ok(removed)
        })
    }

    fn suppression(
        &self,
        tenant: &TenantId,
        recipient: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        self.conn()?.row_opt(
            sql::suppressions::ONE.sqlite,
            params![tenant.as_str(), recipient],
            |r| suppression_from(r),
        )
    }
}
