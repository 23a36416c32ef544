//! PostgreSQL: tenants, their secrets and their templates.

use super::{insert_tenant_row, set_fallback_row, set_provider_row, set_relay_row, PgStore};
use crate::domain::keys::TenantId;
use crate::domain::recipient::Channel;
use crate::domain::template::TenantTemplate;
use crate::domain::tenant::{Tenant, TransportUse};
use crate::domain::Millis;
use crate::storage::cells::Cells;
use crate::storage::cells::{template_from, tenant_from, TENANT_COLS};
use crate::storage::tenants::sql;
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
        self.conn()?.db().row_opt(
            &format!("SELECT {TENANT_COLS} FROM tenants t WHERE t.id = $1"),
            &[&id.as_str()],
            tenant_from,
        )
    }

    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.conn()?
            .db()
            .query(
                &format!("SELECT {TENANT_COLS} FROM tenants t ORDER BY t.created_at, t.id"),
                &[],
            )?
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
        let id = id.as_str();
        self.tx(|tx| {
            // Only the version that was read is changed; the row stays locked for the rest
            // of the change (a concurrent one waits, then finds the version moved on).
            if tx.execute(
                "UPDATE tenants SET updated_at = $2, row_version = row_version + 1 WHERE id = $1 AND row_version = $3",
                &[&id, &now, &version],
            )? == 0
            {
                let exists: bool = tx
                    .query_one("SELECT EXISTS(SELECT 1 FROM tenants WHERE id = $1)", &[&id])?
                    .try_get(0)?;
                return Ok(if exists { Updated::Stale } else { Updated::Missing });
            }
            if let Some(name) = &c.name {
                tx.execute("UPDATE tenants SET name = $2 WHERE id = $1", &[&id, &name.as_str()])?;
            }
            if let Some(enabled) = c.enabled {
                tx.execute(
                    "UPDATE tenants SET enabled = $2 WHERE id = $1",
                    &[&id, &enabled],
                )?;
            }
            if let Some(s) = &c.smtp {
                set_relay_row(tx, id, Some(s))?;
            }
            if let Some(f) = &c.smtp_fallback {
                set_fallback_row(tx, id, f.as_ref())?;
            }
            for (channel, p) in [
                (Channel::Email, &c.email_provider),
                (Channel::Sms, &c.sms_provider),
            ] {
                if let Some(p) = p {
                    set_provider_row(tx, id, channel, p.as_ref())?;
                }
            }
            if c.smtp_fallback.is_some() || c.email_provider.is_some() || c.sms_provider.is_some()
            {
                tx.execute(sql::BUMP_TRANSPORTS, &[&id])?;
            }
            if let Some(ok) = c.pages_approved {
                tx.execute(sql::SET_PAGES_APPROVED, &[&id, &ok])?;
            }
            if let Some((keys, private)) = &c.dkim {
                let private = (!private.is_empty()).then_some(private);
                tx.execute(sql::SET_DKIM, &[&id, keys, &private])?;
            }
            if let Some(sms) = &c.sms {
                let days = i64::from(sms.trusted_days);
                tx.execute(
                    sql::SET_SMS,
                    &[
                        &id,
                        &crate::domain::sms_guard::countries_to_stored(&sms.allowed_countries),
                        &days,
                        &sms.allow_fixed_line,
                    ],
                )?;
            }
            if let Some(on) = c.suppression {
                tx.execute(sql::SET_SUPPRESSION_OFF, &[&id, &!on])?;
            }
            if let Some(color) = &c.brand_color {
                tx.execute(
                    "UPDATE tenants SET brand_color = $2 WHERE id = $1",
                    &[&id, color],
                )?;
            }
            if let Some(urls) = &c.allowed_return_urls {
                tx.execute(
                    "UPDATE tenants SET allowed_return_urls = $2 WHERE id = $1",
                    &[&id, &urls.join("\n")],
                )?;
            }
            if let Some(d) = c.delivery {
                tx.execute(
                    "UPDATE tenants SET delivery = $2 WHERE id = $1",
                    &[&id, &d.as_str()],
                )?;
            }
            if let Some(p) = &c.policy {
                tx.execute(
                    "UPDATE tenants SET code_length = $2, ttl_seconds = $3, max_attempts = $4 WHERE id = $1",
                    &[&id, &i64::from(p.code_length), &i64::from(p.ttl_seconds), &i64::from(p.max_attempts)],
                )?;
            }
            if let Some(l) = &c.default_locale {
                tx.execute(
                    "UPDATE tenants SET default_locale = $2 WHERE id = $1",
                    &[&id, &l.as_str()],
                )?;
            }
            if let Some(test) = c.test {
                tx.execute("UPDATE tenants SET test = $2 WHERE id = $1", &[&id, &test])?;
            }
            // A live tenant keeps no test key (API.md §17.4), whatever was read before this
            // transaction; after `test`, the new key is a live one.
            if c.test == Some(false) {
                tx.execute(sql::DROP_TEST_SECRETS, &[&id])?;
            }
            if let Some(digest) = &c.new_secret {
                tx.execute(sql::ADD_SECRET, &[digest, &id, &now])?;
            }
            let row = tx.query_one(
                &format!("SELECT {TENANT_COLS} FROM tenants t WHERE t.id = $1"),
                &[&id],
            )?;
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
            "UPDATE tenants SET http_url = $2, http_use = $3, http_secret = COALESCE(http_secret, $4), \
             row_version = row_version + 1 WHERE id = $1 RETURNING http_secret = $4",
            &[&id.as_str(), &url, &use_as.as_str(), &secret],
            |r| r.flag(0),
        )
    }

    fn clear_http(&self, id: &TenantId) -> Result<bool, StoreError> {
        Ok(self.conn()?.db().execute(
            "UPDATE tenants SET http_url = NULL, http_use = NULL, http_secret = NULL, \
             row_version = row_version + 1 WHERE id = $1 AND http_url IS NOT NULL",
            &[&id.as_str()],
        )? > 0)
    }

    fn set_http_secret(&self, id: &TenantId, sealed: &[u8]) -> Result<bool, StoreError> {
        Ok(self.conn()?.db().execute(
            "UPDATE tenants SET http_secret = $2, row_version = row_version + 1 \
             WHERE id = $1 AND http_url IS NOT NULL",
            &[&id.as_str(), &sealed],
        )? > 0)
    }

    fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .db()
            .execute("DELETE FROM tenants WHERE id = $1", &[&id.as_str()])?
            > 0)
    }

    fn templates(&self, id: &TenantId) -> Result<Vec<TenantTemplate>, StoreError> {
        self.conn()?.db().rows(
            "SELECT locale, subject, text, html, updated_at, sms FROM templates \
             WHERE tenant_id = $1 ORDER BY locale",
            &[&id.as_str()],
            template_from,
        )
    }

    fn template_locales(&self, id: &TenantId) -> Result<Vec<String>, StoreError> {
        self.conn()?.db().rows(
            "SELECT locale FROM templates WHERE tenant_id = $1 ORDER BY locale",
            &[&id.as_str()],
            |r| r.text(0),
        )
    }

    fn template(&self, id: &TenantId, locale: &str) -> Result<Option<TenantTemplate>, StoreError> {
        self.conn()?.db().row_opt(
            "SELECT locale, subject, text, html, updated_at, sms FROM templates \
             WHERE tenant_id = $1 AND locale = $2",
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
            if tx.execute(
                "UPDATE tenants SET templates_version = templates_version + 1 WHERE id = $1",
                &[&id],
            )? == 0
            {
                return Ok(PutTemplate::NoTenant);
            }
            let row = tx.query_one(
                "SELECT COUNT(*) FILTER (WHERE locale <> $2), COUNT(*) FILTER (WHERE locale = $2) > 0 \
                 FROM templates WHERE tenant_id = $1",
                &[&id, &t.locale],
            )?;
            let (others, exists): (i64, bool) = (row.try_get(0)?, row.try_get(1)?);
            if !exists && others >= i64::from(max_locales) {
                // Returned before commit: the version bump is rolled back with the rest.
                return Err(StoreError::Conflict("template limit"));
            }
            tx.execute(
                "INSERT INTO templates (tenant_id, locale, subject, text, html, updated_at, sms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant_id, locale) DO UPDATE SET subject = excluded.subject, \
                 text = excluded.text, html = excluded.html, updated_at = excluded.updated_at, sms = excluded.sms",
                &[&id, &t.locale, &t.subject, &t.text, &t.html, &t.updated_at, &t.sms],
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
            let n = tx.execute(
                "DELETE FROM templates WHERE tenant_id = $1 AND locale = $2",
                &[&id, &locale],
            )?;
            if n > 0 {
                tx.execute(
                    "UPDATE tenants SET templates_version = templates_version + 1 WHERE id = $1",
                    &[&id],
                )?;
            }
            Ok(n > 0)
        })
    }

    fn tenant_by_secret(&self, digest: &[u8], now: Millis) -> Result<Option<Tenant>, StoreError> {
        self.conn()?.db().row_opt(
            &format!(
                "SELECT {TENANT_COLS} FROM tenant_secrets s JOIN tenants t ON t.id = s.tenant_id \
                 WHERE s.digest = $1 AND (s.expires_at IS NULL OR s.expires_at > $2) AND t.enabled"
            ),
            &[&digest, &now],
            tenant_from,
        )
    }

    fn has_test_secrets(&self, id: &TenantId) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .db()
            .query_one(sql::HAS_TEST_SECRETS, &[&id.as_str()])?
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
    tx.execute(sql::END_SECRETS, &[&id, &old_until])?;
    tx.execute(sql::DROP_ENDED_SECRETS, &[&id, &now])?;
    tx.execute(sql::ADD_SECRET, &[&digest, &id, &now])?;
    Ok(())
}
