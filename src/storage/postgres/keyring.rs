//! PostgreSQL: the keyring (made once under an advisory lock) and re-encryption of stored
//! SMTP passwords and webhook secrets.

use super::{PgStore, KEYRING_LOCK};
use crate::crypto::keyring::WrappedKey;
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::cells::wrapped_key_from;
use crate::storage::sql;
use crate::storage::{KeyringStore, StoreError, TenantSeal};

impl KeyringStore for PgStore {
    fn keyring(&self) -> Result<Vec<WrappedKey>, StoreError> {
        self.conn()?
            .db()
            .rows(sql::keyring::KEYRING.pg, &[], wrapped_key_from)
    }

    fn init_keyring(
        &self,
        rows: &[WrappedKey],
        now: Millis,
    ) -> Result<Vec<WrappedKey>, StoreError> {
        // One instance makes the keyring; the others, waiting on the lock, find it made.
        self.tx(|tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEYRING_LOCK])?;
            let existing: i64 = tx
                .query_one(sql::keyring::KEYRING_ROWS.pg, &[])?
                .try_get(0)?;
            let tenants: bool = tx.query_one(sql::keyring::ANY_TENANT.pg, &[])?.try_get(0)?;
            if existing == 0 && tenants {
                return Err(StoreError::Conflict(
                    "the database holds tenants but no keyring",
                ));
            }
            if existing == 0 {
                for k in rows {
                    tx.execute(
                        sql::keyring::INSERT_KEY.pg,
                        &[
                            &k.kind,
                            &i64::from(k.version),
                            &k.wrapped,
                            &k.kek_id,
                            &k.active,
                            &now,
                        ],
                    )?;
                }
            }
            Ok(())
        })?;
        self.keyring()
    }

    fn rewrap_key(
        &self,
        kind: &str,
        version: u32,
        wrapped: &[u8],
        kek_id: &str,
        old_kek_id: &str,
    ) -> Result<bool, StoreError> {
        let n = self.conn()?.db().execute(
            sql::keyring::REWRAP_KEY.pg,
            &[&kind, &i64::from(version), &wrapped, &kek_id, &old_kek_id],
        )?;
        Ok(n == 1)
    }

    fn add_data_key(&self, row: &WrappedKey, now: Millis) -> Result<(), StoreError> {
        // The primary key (kind, version) refuses a version another rotation took first.
        self.tx(|tx| {
            tx.execute("UPDATE keyring SET active = FALSE WHERE kind = $1", &[&row.kind])?;
            tx.execute(
                "INSERT INTO keyring (kind, version, wrapped, kek_id, active, created_at) VALUES ($1, $2, $3, $4, TRUE, $5)",
                &[&row.kind, &i64::from(row.version), &row.wrapped, &row.kek_id, &now],
            )?;
            Ok(())
        })
    }

    fn reseal_tenant_value(
        &self,
        id: &TenantId,
        which: TenantSeal,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let col = which.column();
        let n = self.conn()?.db().execute(
            &format!("UPDATE tenants SET {col} = $3, row_version = row_version + 1 WHERE id = $1 AND {col} = $2"),
            &[&id.as_str(), &old, &new],
        )?;
        Ok(n == 1)
    }

    fn reseal_webhook_secret(
        &self,
        id: &TenantId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let n = self.conn()?.db().execute(
            sql::keyring::RESEAL_WEBHOOK_SECRET.pg,
            &[&id.as_str(), &old, &new],
        )?;
        Ok(n == 1)
    }
}
