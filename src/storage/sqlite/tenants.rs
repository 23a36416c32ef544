//! SQLite: tenants, their secrets and their templates.

use crate::storage::sql;
use rusqlite::params;

use super::{insert_tenant_row, run_steps, CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::template::TenantTemplate;
use crate::domain::tenant::{Tenant, TransportUse};
use crate::domain::Millis;
use crate::storage::cells::Cells;
use crate::storage::cells::{template_from, tenant_from};
use crate::storage::{PutTemplate, StoreError, TenantChanges, TenantStore, Updated};

impl TenantStore for SqliteStore {
    fn insert_tenant(
        &self,
        t: &Tenant,
        secret_digest: &[u8],
        now: Millis,
    ) -> Result<(), StoreError> {
        let (t, secret_digest) = (t.clone(), secret_digest.to_vec());
        self.writer.write(move |tx| {
            let taken: bool =
                tx.query_row_cached(sql::records::SECRET_EXISTS.sqlite, [&secret_digest], |r| {
                    r.get(0)
                })?;
            if taken {
                return Err(StoreError::Conflict("secret key already registered"));
            }
            insert_tenant_row(tx, &t, &secret_digest, now)?;
            Ok(())
        })
    }

    fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        self.conn()?
            .row_opt(sql::tenants::TENANT.sqlite, [id.as_str()], |r| {
                tenant_from(r)
            })
    }

    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.conn()?
            .rows(sql::tenants::TENANTS.sqlite, [], |r| tenant_from(r))
    }

    fn update_tenant(
        &self,
        id: &TenantId,
        c: &TenantChanges,
        version: i64,
        now: Millis,
    ) -> Result<Updated, StoreError> {
        let (id, c) = (id.clone(), c.clone());
        self.writer.write(move |tx| {
            // Only the version that was read is changed (the writer runs one write at a time).
            if tx.execute_cached(
                sql::tenants::CLAIM_VERSION.sqlite,
                params![id.as_str(), now, version],
            )? == 0
            {
                let exists: bool = tx.query_row_cached(
                    sql::integration::TENANT_EXISTS.sqlite,
                    [id.as_str()],
                    |r| r.get(0),
                )?;
                return Ok(if exists {
                    Updated::Stale
                } else {
                    Updated::Missing
                });
            }
            run_steps(tx, &c.steps(&id, now))?;
            Ok(tx
                .row_opt(sql::tenants::TENANT.sqlite, [id.as_str()], |r| {
                    tenant_from(r)
                })?
                .map_or(Updated::Missing, |t| Updated::Done(Box::new(t))))
        })
    }

    fn put_http(
        &self,
        id: &TenantId,
        url: &str,
        use_as: TransportUse,
        secret: &[u8],
    ) -> Result<Option<bool>, StoreError> {
        let (id, url, secret) = (id.clone(), url.to_string(), secret.to_vec());
        self.writer.write(move |tx| {
            tx.row_opt(
                sql::tenants::PUT_HTTP.sqlite,
                params![id.as_str(), url, use_as.as_str(), secret],
                |r| r.flag(0),
            )
        })
    }

    fn clear_http(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.writer.write(move |tx| {
            Ok(tx.execute_cached(sql::tenants::CLEAR_HTTP.sqlite, [id.as_str()])? > 0)
        })
    }

    fn set_http_secret(&self, id: &TenantId, sealed: &[u8]) -> Result<bool, StoreError> {
        let (id, sealed) = (id.clone(), sealed.to_vec());
        self.writer.write(move |tx| {
            Ok(tx.execute_cached(
                sql::tenants::SET_HTTP_SECRET.sqlite,
                params![id.as_str(), sealed],
            )? > 0)
        })
    }

    fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.writer.write(move |conn| {
            Ok(conn.execute_cached(sql::tenants::DELETE_TENANT.sqlite, [id.as_str()])? > 0)
        })
    }

    fn templates(&self, id: &TenantId) -> Result<Vec<TenantTemplate>, StoreError> {
        self.conn()?
            .rows(sql::tenants::TEMPLATES.sqlite, [id.as_str()], |r| {
                template_from(r)
            })
    }

    fn template_locales(&self, id: &TenantId) -> Result<Vec<String>, StoreError> {
        self.conn()?
            .rows(sql::tenants::TEMPLATE_LOCALES.sqlite, [id.as_str()], |r| {
                r.text(0)
            })
    }

    fn template(&self, id: &TenantId, locale: &str) -> Result<Option<TenantTemplate>, StoreError> {
        self.conn()?.row_opt(
            sql::tenants::TEMPLATE.sqlite,
            params![id.as_str(), locale],
            |r| template_from(r),
        )
    }

    fn put_template(
        &self,
        id: &TenantId,
        t: &TenantTemplate,
        max_locales: u32,
    ) -> Result<PutTemplate, StoreError> {
        let (id, t) = (id.clone(), t.clone());
        self.writer.write(move |tx| {
            let (others, exists): (i64, bool) = tx.query_row_cached(
                sql::tenants::TEMPLATE_COUNTS.sqlite,
                params![id.as_str(), t.locale],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if !exists && others >= i64::from(max_locales) {
                let tenant: bool = tx.query_row_cached(
                    sql::integration::TENANT_EXISTS.sqlite,
                    [id.as_str()],
                    |r| r.get(0),
                )?;
                return Ok(if tenant {
                    PutTemplate::Full
                } else {
                    PutTemplate::NoTenant
                });
            }
            if tx.execute_cached(sql::tenants::BUMP_TEMPLATES_VERSION.sqlite, [id.as_str()])? == 0 {
                return Ok(PutTemplate::NoTenant);
            }
            tx.execute_cached(
                sql::tenants::PUT_TEMPLATE.sqlite,
                params![
                    id.as_str(),
                    t.locale,
                    t.subject,
                    t.text,
                    t.html,
                    t.updated_at,
                    t.sms
                ],
            )?;
            Ok(PutTemplate::Stored)
        })
    }

    fn delete_template(&self, id: &TenantId, locale: &str) -> Result<bool, StoreError> {
        let (id, locale) = (id.clone(), locale.to_string());
        self.writer.write(move |tx| {
            let n = tx.execute_cached(
                sql::tenants::DELETE_TEMPLATE.sqlite,
                params![id.as_str(), locale],
            )?;
            if n > 0 {
                tx.execute_cached(sql::tenants::BUMP_TEMPLATES_VERSION.sqlite, [id.as_str()])?;
            }
            Ok(n > 0)
        })
    }

    fn tenant_by_secret(&self, digest: &[u8], now: Millis) -> Result<Option<Tenant>, StoreError> {
        self.conn()?.row_opt(
            sql::tenants::TENANT_BY_SECRET.sqlite,
            params![digest, now],
            |r| tenant_from(r),
        )
    }

    fn has_test_secrets(&self, id: &TenantId) -> Result<bool, StoreError> {
        Ok(self.conn()?.query_row_cached(
            sql::tenants::HAS_TEST_SECRETS.sqlite,
            [id.as_str()],
            |r| r.get(0),
        )?)
    }

    fn rotate_secret(
        &self,
        id: &TenantId,
        new_digest: &[u8],
        old_until: Millis,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (id, new_digest) = (id.clone(), new_digest.to_vec());
        self.writer.write(move |tx| {
            let exists: bool =
                tx.query_row_cached(sql::integration::TENANT_EXISTS.sqlite, [id.as_str()], |r| {
                    r.get(0)
                })?;
            if !exists {
                return Ok(false);
            }
            replace_secret(tx, id.as_str(), &new_digest, old_until, now)?;
            Ok(true)
        })
    }
}

/// A new secret key; the tenant's others end at `old_until` (or keep an earlier end).
fn replace_secret(
    tx: &rusqlite::Connection,
    id: &str,
    digest: &[u8],
    old_until: Millis,
    now: Millis,
) -> Result<(), StoreError> {
    tx.execute_cached(sql::tenants::END_SECRETS.sqlite, params![id, old_until])?;
    tx.execute_cached(sql::tenants::DROP_ENDED_SECRETS.sqlite, params![id, now])?;
    tx.execute_cached(sql::tenants::ADD_SECRET.sqlite, params![digest, id, now])?;
    Ok(())
}
