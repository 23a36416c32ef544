//! PostgreSQL: hosted sessions and logos.

use super::PgStore;
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::hosted::{session_from, HostedStore, NewSession, SessionRow};
use crate::storage::sql;
use crate::storage::StoreError;

impl HostedStore for PgStore {
    fn insert_session(&self, s: &NewSession) -> Result<(), StoreError> {
        self.conn()?.db().execute(
            sql::hosted::INSERT_SESSION.pg,
            &[
                &s.id,
                &s.tenant_id.as_str(),
                &s.email,
                &s.purpose,
                &s.locale,
                &s.return_url,
                &s.created_at,
                &s.expires_at,
                &s.code_challenge,
            ],
        )?;
        Ok(())
    }

    fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        self.conn()?
            .db()
            .row_opt(sql::hosted::SESSION.pg, &[&id], session_from)
    }

    fn set_session_code(
        &self,
        id: &str,
        email: &str,
        key_digest: &[u8],
        key_sealed: &[u8],
    ) -> Result<bool, StoreError> {
        Ok(self.conn()?.db().execute(
            sql::hosted::SET_SESSION_CODE.pg,
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
            sql::hosted::FINISH_SESSION.pg,
            &[&id, &now, &key_digest, &finished_by],
        )? == 1)
    }

    fn logo(&self, tenant: &TenantId) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn()?.db().row_opt(
            // A disabled tenant's logo is not served (API.md §17.8).
            sql::hosted::LOGO.pg,
            &[&tenant.as_str()],
            |r| Ok(r.try_get::<_, Vec<u8>>(0)?),
        )
    }

    fn has_logo(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .db()
            .query_one(sql::hosted::HAS_LOGO.pg, &[&tenant.as_str()])?
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
            Some(p) => db.execute(sql::hosted::PUT_LOGO.pg, &[&tenant.as_str(), &p, &now])? == 1,
            None => db.execute(sql::hosted::DELETE_LOGO.pg, &[&tenant.as_str()])? == 1,
        })
    }
}
