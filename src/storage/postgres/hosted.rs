//! PostgreSQL: hosted sessions and logos.

use super::PgStore;
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::hosted::{session_from, HostedStore, NewSession, SessionRow, SESSION_COLS};
use crate::storage::StoreError;

impl HostedStore for PgStore {
    fn insert_session(&self, s: &NewSession) -> Result<(), StoreError> {
        self.conn()?.db().execute(
            "INSERT INTO hosted_sessions (id, tenant_id, email, purpose, locale, return_url, status, created_at, expires_at, code_challenge) \
             VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8, $9)",
            &[&s.id, &s.tenant_id.as_str(), &s.email, &s.purpose, &s.locale, &s.return_url, &s.created_at, &s.expires_at, &s.code_challenge],
        )?;
        Ok(())
    }

    fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        self.conn()?.db().row_opt(
            &format!("SELECT {SESSION_COLS} FROM hosted_sessions h WHERE h.id = $1"),
            &[&id],
            session_from,
        )
    }

    fn set_session_code(
        &self,
        id: &str,
        email: &str,
        key_digest: &[u8],
        key_sealed: &[u8],
    ) -> Result<bool, StoreError> {
        Ok(self.conn()?.db().execute(
            "UPDATE hosted_sessions SET email = $2, key_digest = $3, key_sealed = $4 \
             WHERE id = $1 AND status = 'open' AND (email IS NULL OR email = $2)",
            &[&id, &email, &key_digest, &key_sealed],
        )? == 1)
    }

    fn finish_session(
        &self,
        id: &str,
        key_digest: &[u8],
        now: Millis,
        finished_by: &[u8],
    ) -> Result<bool, StoreError> {
        Ok(self.conn()?.db().execute(
            "UPDATE hosted_sessions SET status = 'verified', verified_at = $2, finished_by = $4 \
             WHERE id = $1 AND status = 'open' AND key_digest = $3",
            &[&id, &now, &key_digest, &finished_by],
        )? == 1)
    }

    fn logo(&self, tenant: &TenantId) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn()?.db().row_opt(
            // A disabled tenant's logo is not served (API.md §17.8).
            "SELECT l.png FROM tenant_logos l JOIN tenants t ON t.id = l.tenant_id \
             WHERE l.tenant_id = $1 AND t.enabled",
            &[&tenant.as_str()],
            |r| Ok(r.try_get::<_, Vec<u8>>(0)?),
        )
    }

    fn has_logo(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .db()
            .query_one(
                "SELECT EXISTS(SELECT 1 FROM tenant_logos WHERE tenant_id = $1)",
                &[&tenant.as_str()],
            )?
            .try_get(0)?)
    }

    fn put_logo(
        &self,
        tenant: &TenantId,
        png: Option<&[u8]>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn()?;
        let mut db = c.db();
        Ok(match png {
            Some(p) => db.execute(
                "INSERT INTO tenant_logos (tenant_id, png, updated_at) \
                 SELECT id, $2, $3 FROM tenants WHERE id = $1 \
                 ON CONFLICT (tenant_id) DO UPDATE SET png = excluded.png, updated_at = excluded.updated_at",
                &[&tenant.as_str(), &p, &now],
            )? == 1,
            None => db.execute("DELETE FROM tenant_logos WHERE tenant_id = $1", &[&tenant.as_str()])? == 1,
        })
    }
}
