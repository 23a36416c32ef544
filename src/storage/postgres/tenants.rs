//! PostgreSQL: tenants, their secrets and their templates.

use super::{insert_tenant_row, run_steps, PgStore};
use crate::domain::keys::TenantId;
use crate::domain::template::TenantTemplate;
use crate::domain::tenant::{Tenant, TransportUse};
use crate::domain::Millis;
use crate::storage::cells::Cells;
use crate::storage::cells::{template_from, tenant_from};
use crate::storage::sql;
use crate::storage::{PutTemplate, StoreError, TenantChanges, TenantStore, Updated};

impl TenantStore for PgStore {
    fn insert_tenant(
        &self,
        t: &Tenant,
        secret_digest: &[u8],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.tx(|tx| {
            if insert_tenant_row(tx, t, secret_digest, now)? {
                Ok(())
            } else {
                Err(StoreError::Conflict("secret key already registered"))
            }
        })
    }

    fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        self.conn()?
            .db()
            .row_opt(sql::tenants::TENANT.pg, &[&id.as_str()], tenant_from)
    }

    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.conn()?
            .db()
            .query(sql::tenants::TENANTS.pg, &[])?
            .iter()
            .map(tenant_from)
            .collect()
    }

    fn update_tenant(
        &self,
        id: &TenantId,
        c: &TenantChanges,
        version: i64,
        now: Millis,
    ) -> Result<Updated, StoreError> {
        let steps = c.steps(id, now);
        let id = id.as_str();
        self.tx(|tx| {
            // Only the version that was read is changed; the row stays locked for the rest
            // of the change (a concurrent one waits, then finds the version moved on).
            if tx.execute(sql::tenants::CLAIM_VERSION.pg, &[&id, &now, &version])? == 0 {
                let exists: bool = tx
                    .query_one(sql::integration::TENANT_EXISTS.pg, &[&id])?
                    .try_get(0)?;
                return Ok(if exists {
                    Updated::Stale
                } else {
                    Updated::Missing
                });
            }
            run_steps(tx, &steps)?;
            let row = tx.query_one(sql::tenants::TENANT.pg, &[&id])?;
            Ok(Updated::Done(Box::new(tenant_from(&row)?)))
        })
    }

    fn put_http(
        &self,
        id: &TenantId,
        url: &str,
        use_as: TransportUse,
        secret: &[u8],
    ) -> Result<Option<bool>, StoreError> {
        self.conn()?.db().row_opt(
            sql::tenants::PUT_HTTP.pg,
            &[&id.as_str(), &url, &use_as.as_str(), &secret],
            |r| r.flag(0),
        )
    }

    fn clear_http(&self, id: &TenantId) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .db()
            .execute(sql::tenants::CLEAR_HTTP.pg, &[&id.as_str()])?
            > 0)
    }

    fn set_http_secret(&self, id: &TenantId, sealed: &[u8]) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .db()
            .execute(sql::tenants::SET_HTTP_SECRET.pg, &[&id.as_str(), &sealed])?
            > 0)
    }

    fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .db()
            .execute(sql::tenants::DELETE_TENANT.pg, &[&id.as_str()])?
            > 0)
    }

    fn templates(&self, id: &TenantId) -> Result<Vec<TenantTemplate>, StoreError> {
        self.conn()?
            .db()
            .rows(sql::tenants::TEMPLATES.pg, &[&id.as_str()], template_from)
    }

    fn template_locales(&self, id: &TenantId) -> Result<Vec<String>, StoreError> {
        self.conn()?
            .db()
            .rows(sql::tenants::TEMPLATE_LOCALES.pg, &[&id.as_str()], |r| {
                r.text(0)
            })
    }

    fn template(&self, id: &TenantId, locale: &str) -> Result<Option<TenantTemplate>, StoreError> {
        self.conn()?.db().row_opt(
            sql::tenants::TEMPLATE.pg,
            &[&id.as_str(), &locale],
            template_from,
        )
    }

    fn put_template(
        &self,
        id: &TenantId,
        t: &TenantTemplate,
        max_locales: u32,
    ) -> Result<PutTemplate, StoreError> {
        let id = id.as_str();
        self.tx(|tx| {
            // Locks the tenant row: template changes of one tenant take turns, so the count
            // below cannot be overtaken.
            if tx.execute(sql::tenants::BUMP_TEMPLATES_VERSION.pg, &[&id])? == 0 {
                return Ok(PutTemplate::NoTenant);
            }
            let row = tx.query_one(sql::tenants::TEMPLATE_COUNTS.pg, &[&id, &t.locale])?;
            let (others, exists): (i64, bool) = (row.try_get(0)?, row.try_get(1)?);
            if !exists && others >= i64::from(max_locales) {
                // Returned before commit: the version bump is rolled back with the rest.
                return Err(StoreError::Conflict("template limit"));
            }
            tx.execute(
                sql::tenants::PUT_TEMPLATE.pg,
                &[
                    &id,
                    &t.locale,
                    &t.subject,
                    &t.text,
                    &t.html,
                    &t.updated_at,
                    &t.sms,
                ],
            )?;
            Ok(PutTemplate::Stored)
        })
        .or_else(|e| match e {
            StoreError::Conflict("template limit") => Ok(PutTemplate::Full),
            other => Err(other),
        })
    }

    fn delete_template(&self, id: &TenantId, locale: &str) -> Result<bool, StoreError> {
        let id = id.as_str();
        self.tx(|tx| {
            let n = tx.execute(sql::tenants::DELETE_TEMPLATE.pg, &[&id, &locale])?;
            if n > 0 {
                tx.execute(sql::tenants::BUMP_TEMPLATES_VERSION.pg, &[&id])?;
            }
            Ok(n > 0)
        })
    }

    fn tenant_by_secret(&self, digest: &[u8], now: Millis) -> Result<Option<Tenant>, StoreError> {
        self.conn()?.db().row_opt(
            sql::tenants::TENANT_BY_SECRET.pg,
            &[&digest, &now],
            tenant_from,
        )
    }

    fn has_test_secrets(&self, id: &TenantId) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .db()
            .query_one(sql::tenants::HAS_TEST_SECRETS.pg, &[&id.as_str()])?
            .try_get(0)?)
    }

    fn rotate_secret(
        &self,
        id: &TenantId,
        new_digest: &[u8],
        old_until: Millis,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let id = id.as_str();
        self.tx(|tx| {
            // Lock the tenant: two rotations at once take turns.
            if tx
                .query_opt("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", &[&id])?
                .is_none()
            {
                return Ok(false);
            }
            replace_secret(tx, id, new_digest, old_until, now)?;
            Ok(true)
        })
    }
}

/// A new secret key; the tenant's others end at `old_until` (or keep an earlier end).
fn replace_secret(
    tx: &mut super::conn::Tx<'_, '_>,
    id: &str,
    digest: &[u8],
    old_until: Millis,
    now: Millis,
) -> Result<(), StoreError> {
    tx.execute(sql::tenants::END_SECRETS.pg, &[&id, &old_until])?;
    tx.execute(sql::tenants::DROP_ENDED_SECRETS.pg, &[&id, &now])?;
    tx.execute(sql::tenants::ADD_SECRET.pg, &[&digest, &id, &now])?;
    Ok(())
}
