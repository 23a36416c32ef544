//! SQLite: hosted sessions and logos.

use crate::storage::sql;
use rusqlite::params;

use super::{CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::hosted::{session_from, HostedStore, NewSession, SessionRow};
use crate::storage::StoreError;

impl HostedStore for SqliteStore {
    fn insert_session(&self, s: &NewSession) -> Result<(), StoreError> {
        let s = s.clone();
        self.writer.write(move |tx| {
            tx.execute_cached(
                sql::hosted::INSERT_SESSION.sqlite,
                params![
                    s.id,
                    s.tenant_id.as_str(),
                    s.email,
                    s.purpose,
                    s.locale,
                    s.return_url,
                    s.created_at,
                    s.expires_at,
                    s.code_challenge
                ],
            )?;
            Ok(())
        })
    }

    fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        self.conn()?
            .row_opt(sql::hosted::SESSION.sqlite, [id], |r| session_from(r))
    }

    fn set_session_code(
        &self,
        id: &str,
        email: &str,
        key_digest: &[u8],
        key_sealed: &[u8],
    ) -> Result<bool, StoreError> {
        let (id, email, kd, ks) = (
            id.to_string(),
            email.to_string(),
            key_digest.to_vec(),
            key_sealed.to_vec(),
        );
        self.writer.write(move |tx| {
            Ok(tx.execute_cached(
                sql::hosted::SET_SESSION_CODE.sqlite,
                params![id, email, kd, ks],
            )? == 1)
        })
    }

    fn finish_session(
        &self,
        id: &str,
        key_digest: &[u8],
        now: Millis,
        finished_by: &[u8],
    ) -> Result<bool, StoreError> {
        let (id, kd, by) = (id.to_string(), key_digest.to_vec(), finished_by.to_vec());
        self.writer.write(move |tx| {
            Ok(
                tx.execute_cached(sql::hosted::FINISH_SESSION.sqlite, params![id, now, kd, by])?
                    == 1,
            )
        })
    }

    fn logo(&self, tenant: &TenantId) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn()?.row_opt(
            // A disabled tenant's logo is not served (API.md §17.8).
            sql::hosted::LOGO.sqlite,
            [tenant.as_str()],
            |r| Ok(r.get::<_, Vec<u8>>(0)?),
        )
    }

    fn has_logo(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .query_row_cached(sql::hosted::HAS_LOGO.sqlite, [tenant.as_str()], |r| {
                r.get(0)
            })?)
    }

    fn put_logo(
        &self,
        tenant: &TenantId,
        png: Option<&[u8]>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (tenant, png) = (tenant.clone(), png.map(<[u8]>::to_vec));
        self.writer.write(move |tx| {
            Ok(match png {
                Some(p) => {
                    tx.execute_cached(
                        sql::hosted::PUT_LOGO.sqlite,
                        params![tenant.as_str(), p, now],
                    )? == 1
                }
                None => tx.execute_cached(sql::hosted::DELETE_LOGO.sqlite, [tenant.as_str()])? == 1,
            })
        })
    }
}
