//! PostgreSQL: the suppression list.

use super::PgStore;
use crate::domain::keys::TenantId;
use crate::domain::suppression::{Cursor, Suppression};
use crate::storage::cells::suppression_from;
use crate::storage::sql;
use crate::storage::{StoreError, SuppressionStore};

impl SuppressionStore for PgStore {
    fn suppressions(
        &self,
        tenant: &TenantId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Suppression>, StoreError> {
        let (at, recipient) = after.map_or((0, ""), |c| (c.created_at, c.recipient.as_str()));
        self.conn()?.db().rows(
            sql::suppressions::PAGE.pg,
            &[
                &tenant.as_str(),
                &after.is_none(),
                &at,
                &recipient,
                &(limit as i64),
            ],
            suppression_from,
        )
    }

    fn suppress(&self, tenant: &TenantId, e: &Suppression) -> Result<bool, StoreError> {
        let t = tenant.as_str();
        self.tx(|tx| {
            let added = tx.execute(
                sql::suppressions::INSERT.pg,
                &[
                    &t,
                    &e.recipient,
                    &e.reason.as_str(),
                    &e.source,
                    &e.created_at,
                ],
            )? == 1;
            if added {
                tx.execute(sql::suppressions::COUNT_UP.pg, &[&t])?;
            }
            Ok(added)
        })
    }

    fn unsuppress(&self, tenant: &TenantId, recipient: &str) -> Result<bool, StoreError> {
        let t = tenant.as_str();
        self.tx(|tx| {
            let removed = tx.execute(sql::suppressions::DELETE.pg, &[&t, &recipient])? == 1;
            if removed {
                tx.execute(sql::suppressions::COUNT_DOWN.pg, &[&t])?;
            }
            Ok(removed)
        })
    }

    fn suppression(
        &self,
        tenant: &TenantId,
        recipient: &str,
    ) -> Result<Option<Suppression>, StoreError> {
        self.conn()?.db().row_opt(
            sql::suppressions::ONE.pg,
            &[&tenant.as_str(), &recipient],
            suppression_from,
        )
    }
}
