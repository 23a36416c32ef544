//! The tenant aggregate: tenants, their secret keys (as digests) and their templates,
//! written once for both backends over the engine. How a change or a new tenant becomes
//! statements is `writes.rs`.

mod writes;

pub use writes::TenantChanges;
pub(crate) use writes::{insert_tenant_row, run_steps};

use super::cells::{template_from, tenant_from};
use super::engine::{args, Engine, Exec};
use super::sql::{self, Arg};
use super::StoreError;
use crate::domain::keys::TenantId;
use crate::domain::template::TenantTemplate;
use crate::domain::tenant::{Tenant, TransportUse};
use crate::domain::Millis;

/// What a conditional tenant change came to.
#[derive(Debug, Clone)]
pub enum Updated {
    Done(Box<Tenant>),
    /// Changed by someone else since it was read: nothing was written.
    Stale,
    Missing,
}

/// What storing a template came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutTemplate {
    Stored,
    NoTenant,
    /// A new locale beyond the tenant's limit: nothing stored.
    Full,
}

pub trait TenantStore {
    /// A new tenant with its first secret; a secret already registered (to anyone) is a
    /// `Conflict`.
    fn insert_tenant(
        &self,
        t: &Tenant,
        secret_digest: &[u8],
        now: Millis,
    ) -> Result<(), StoreError>;
    fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError>;
    fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Apply `c` if the tenant is still at `version` (every change bumps it).
    fn update_tenant(
        &self,
        id: &TenantId,
        c: &TenantChanges,
        version: i64,
        now: Millis,
    ) -> Result<Updated, StoreError>;
    /// Store the tenant's HTTP transport (API.md §12.2), keeping the signing secret it has
    /// (`secret` is used only when it has none), if the tenant is still at `version` (the
    /// one its checks read). `None`: no such tenant, or it changed since; `Some(true)`: the
    /// transport is new (its secret is `secret`).
    fn put_http(
        &self,
        id: &TenantId,
        url: &str,
        use_as: TransportUse,
        secret: &[u8],
        version: i64,
    ) -> Result<Option<bool>, StoreError>;
    /// Remove the tenant's HTTP transport; false when it had none.
    fn clear_http(&self, id: &TenantId) -> Result<bool, StoreError>;
    /// A new sealed signing secret; false when the tenant has no HTTP transport.
    fn set_http_secret(&self, id: &TenantId, sealed: &[u8]) -> Result<bool, StoreError>;
    fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError>;
    /// The enabled tenant whose current (or in-grace) secret has this digest.
    fn tenant_by_secret(&self, digest: &[u8], now: Millis) -> Result<Option<Tenant>, StoreError>;
    /// Whether the tenant has secret keys made while it was a test tenant (`sk_test_`).
    fn has_test_secrets(&self, id: &TenantId) -> Result<bool, StoreError>;
    /// Replace the tenant's secret; older secrets stop at `old_until` (now: at once).
    fn rotate_secret(
        &self,
        id: &TenantId,
        new_digest: &[u8],
        test: bool,
        old_until: Millis,
        now: Millis,
    ) -> Result<Option<bool>, StoreError>;
    /// The tenant's own templates, by locale.
    fn templates(&self, id: &TenantId) -> Result<Vec<TenantTemplate>, StoreError>;
    /// The locales the tenant has a template for (names only).
    fn template_locales(&self, id: &TenantId) -> Result<Vec<String>, StoreError>;
    /// One template of the tenant.
    fn template(&self, id: &TenantId, locale: &str) -> Result<Option<TenantTemplate>, StoreError>;
    /// Store (insert or replace) a template and bump the tenant's `templates_version` — a
    /// new locale only while the tenant has fewer than `max_locales` (API.md §6.29).
    fn put_template(
        &self,
        id: &TenantId,
        t: &TenantTemplate,
        max_locales: u32,
    ) -> Result<PutTemplate, StoreError>;
    /// Remove a template and bump `templates_version`; false when there was none.
    fn delete_template(&self, id: &TenantId, locale: &str) -> Result<bool, StoreError>;
}

/// A new secret key; the tenant's others end at `old_until` (or keep an earlier end).
fn replace_secret(
    tx: &mut dyn Exec,
    id: &str,
    digest: &[u8],
    old_until: Millis,
    now: Millis,
) -> Result<(), StoreError> {
    tx.exec(sql::tenants::END_SECRETS, args![id, old_until])?;
    tx.exec(sql::tenants::DROP_ENDED_SECRETS, args![id, now])?;
    tx.exec(sql::tenants::ADD_SECRET, args![digest, id, now])?;
    Ok(())
}

/// Whether the tenant exists, its row locked for the rest of the transaction.
fn lock_tenant(tx: &mut dyn Exec, id: &str) -> Result<bool, StoreError> {
    Ok(tx
        .row_opt(sql::tenants::TENANT_LOCKED, args![id], |_| Ok(()))?
        .is_some())
}

impl<E: Engine> TenantStore for E {
    fn insert_tenant(
        &self,
        t: &Tenant,
        secret_digest: &[u8],
        now: Millis,
    ) -> Result<(), StoreError> {
        let (t, digest) = (t.clone(), secret_digest.to_vec());
        self.transact(move |tx| match insert_tenant_row(tx, &t, &digest, now)? {
            true => Ok(()),
            // Returned before commit: the tenant's row is rolled back.
            false => Err(StoreError::Conflict("secret key already registered")),
        })
    }

    fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        self.row_opt(sql::tenants::TENANT, args![id.as_str()], |r| tenant_from(r))
    }

    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.rows(sql::tenants::TENANTS, &[], |r| tenant_from(r))
    }

    fn update_tenant(
        &self,
        id: &TenantId,
        c: &TenantChanges,
        version: i64,
        now: Millis,
    ) -> Result<Updated, StoreError> {
        let (steps, id) = (c.steps(id, now), id.to_string());
        self.transact(move |tx| {
            // Only the version that was read is changed; on PostgreSQL the row stays locked
            // for the rest of the change (a concurrent one waits, then finds the version
            // moved on).
            let claim = args![id.as_str(), now, version];
            if tx.exec(sql::tenants::CLAIM_VERSION, claim)? == 0 {
                let exists = args![id.as_str()];
                let exists = tx.row_opt(sql::integration::TENANT_EXISTS, exists, |r| r.flag(0))?;
                return Ok(match exists {
                    Some(true) => Updated::Stale,
                    _ => Updated::Missing,
                });
            }
            run_steps(tx, &steps)?;
            let t = tx.row_opt(sql::tenants::TENANT, args![id.as_str()], |r| tenant_from(r))?;
            Ok(t.map_or(Updated::Missing, |t| Updated::Done(Box::new(t))))
        })
    }

    fn put_http(
        &self,
        id: &TenantId,
        url: &str,
        use_as: TransportUse,
        secret: &[u8],
        version: i64,
    ) -> Result<Option<bool>, StoreError> {
        let row = [
            id.as_str().into(),
            url.into(),
            use_as.as_str().into(),
            Arg::from(secret),
            version.into(),
        ];
        self.transact(move |tx| tx.row_opt(sql::tenants::PUT_HTTP, &row, |r| r.flag(0)))
    }

    fn clear_http(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = [Arg::from(id.as_str())];
        Ok(self.exec_one(sql::tenants::CLEAR_HTTP, &id)? > 0)
    }

    fn set_http_secret(&self, id: &TenantId, sealed: &[u8]) -> Result<bool, StoreError> {
        let row = [Arg::from(id.as_str()), sealed.into()];
        Ok(self.exec_one(sql::tenants::SET_HTTP_SECRET, &row)? > 0)
    }

    fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = [Arg::from(id.as_str())];
        Ok(self.exec_one(sql::tenants::DELETE_TENANT, &id)? > 0)
    }

    fn tenant_by_secret(&self, digest: &[u8], now: Millis) -> Result<Option<Tenant>, StoreError> {
        let q = args![digest, now];
        self.row_opt(sql::tenants::TENANT_BY_SECRET, q, |r| tenant_from(r))
    }

    fn has_test_secrets(&self, id: &TenantId) -> Result<bool, StoreError> {
        let q = args![id.as_str()];
        let has = self.row_opt(sql::tenants::HAS_TEST_SECRETS, q, |r| r.flag(0))?;
        Ok(has == Some(true))
    }

    fn rotate_secret(
        &self,
        id: &TenantId,
        new_digest: &[u8],
        test: bool,
        old_until: Millis,
        now: Millis,
    ) -> Result<Option<bool>, StoreError> {
        let (id, digest) = (id.to_string(), new_digest.to_vec());
        self.transact(move |tx| {
            // Two rotations of one tenant take turns.
            if !lock_tenant(tx, &id)? {
                return Ok(None);
            }
            // The key was made for a (test or live) tenant it must still be: a tenant that
            // went live meanwhile gets no `sk_test_` key (API.md §17.4).
            let is_test =
                tx.row_opt(sql::tenants::TENANT_TEST, args![id.as_str()], |r| r.flag(0))?;
            if is_test != Some(test) {
                return Ok(Some(false));
            }
            replace_secret(tx, &id, &digest, old_until, now)?;
            Ok(Some(true))
        })
    }

    fn templates(&self, id: &TenantId) -> Result<Vec<TenantTemplate>, StoreError> {
        self.rows(sql::tenants::TEMPLATES, args![id.as_str()], |r| {
            template_from(r)
        })
    }

    fn template_locales(&self, id: &TenantId) -> Result<Vec<String>, StoreError> {
        self.rows(sql::tenants::TEMPLATE_LOCALES, args![id.as_str()], |r| {
            r.text(0)
        })
    }

    fn template(&self, id: &TenantId, locale: &str) -> Result<Option<TenantTemplate>, StoreError> {
        let q = args![id.as_str(), locale];
        self.row_opt(sql::tenants::TEMPLATE, q, |r| template_from(r))
    }

    fn put_template(
        &self,
        id: &TenantId,
        t: &TenantTemplate,
        max_locales: u32,
    ) -> Result<PutTemplate, StoreError> {
        let (id, t) = (id.to_string(), t.clone());
        self.transact(move |tx| {
            // The version bump comes first: on PostgreSQL it locks the tenant row, so the
            // template changes of one tenant take turns and the count below cannot be
            // overtaken.
            if tx.exec(sql::tenants::BUMP_TEMPLATES_VERSION, args![id.as_str()])? == 0 {
                return Ok(PutTemplate::NoTenant);
            }
            let counts = args![id.as_str(), t.locale.as_str()];
            let (others, exists) = tx
                .row_opt(sql::tenants::TEMPLATE_COUNTS, counts, |r| {
                    Ok((r.int(0)?, r.flag(1)?))
                })?
                .unwrap_or((0, false));
            if !exists && others >= i64::from(max_locales) {
                // Returned before commit: the version bump is rolled back with the rest.
                return Err(StoreError::Conflict("template limit"));
            }
            let row = args![
                id.as_str(),
                t.locale.as_str(),
                t.subject.clone(),
                t.text.clone(),
                t.html.clone(),
                t.updated_at,
                t.sms.clone(),
            ];
            tx.exec(sql::tenants::PUT_TEMPLATE, row)?;
            Ok(PutTemplate::Stored)
        })
        .or_else(|e| match e {
            StoreError::Conflict("template limit") => Ok(PutTemplate::Full),
            other => Err(other),
        })
    }

    fn delete_template(&self, id: &TenantId, locale: &str) -> Result<bool, StoreError> {
        let key = [Arg::from(id.as_str()), locale.into()];
        self.transact(move |tx| {
            // The tenant's row first, as a PUT takes it (on PostgreSQL the version bump locks
            // it): a DELETE holding the template's row while it waits for the tenant's would
            // deadlock with a PUT holding the tenant's and waiting for the template's.
            tx.exec(sql::tenants::BUMP_TEMPLATES_VERSION, &key[..1])?;
            if tx.exec(sql::tenants::DELETE_TEMPLATE, &key)? == 0 {
                // Nothing to delete: the bump is rolled back with the rest.
                return Err(StoreError::Conflict("no template"));
            }
            Ok(true)
        })
        .or_else(|e| match e {
            StoreError::Conflict("no template") => Ok(false),
            other => Err(other),
        })
    }
}
