//! SQLite: the keyring (wrapped data keys and pepper) and re-encryption of stored SMTP
//! passwords and webhook secrets.

use crate::storage::sql;
use rusqlite::{params, TransactionBehavior};

use super::{CachedSql, SqliteStore};
use crate::crypto::keyring::WrappedKey;
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::cells::wrapped_key_from;
use crate::storage::{KeyringStore, StoreError, TenantSeal};

impl KeyringStore for SqliteStore {
    fn keyring(&self) -> Result<Vec<WrappedKey>, StoreError> {
        self.conn()?
            .rows(sql::keyring::KEYRING.sqlite, [], |r| wrapped_key_from(r))
    }

    fn init_keyring(
        &self,
        rows: &[WrappedKey],
        now: Millis,
    ) -> Result<Vec<WrappedKey>, StoreError> {
        {
            let mut conn = self.pooled()?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: i64 =
                tx.query_row_cached(sql::keyring::KEYRING_ROWS.sqlite, [], |r| r.get(0))?;
            let tenants: bool =
                tx.query_row_cached(sql::keyring::ANY_TENANT.sqlite, [], |r| r.get(0))?;
            if existing == 0 && tenants {
                return Err(StoreError::Conflict(
                    "the database holds tenants but no keyring",
                ));
            }
            if existing == 0 {
                for k in rows {
                    tx.execute_cached(
                        sql::keyring::INSERT_KEY.sqlite,
                        params![k.kind, k.version, k.wrapped, k.kek_id, k.active, now],
                    )?;
                }
            }
            tx.commit()?;
        }
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
        let conn = self.pooled()?;
        let n = conn.execute_cached(
            sql::keyring::REWRAP_KEY.sqlite,
            params![kind, version, wrapped, kek_id, old_kek_id],
        )?;
        Ok(n == 1)
    }

    fn add_data_key(&self, row: &WrappedKey, now: Millis) -> Result<(), StoreError> {
        let mut conn = self.pooled()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_cached("UPDATE keyring SET active = 0 WHERE kind = ?1", [&row.kind])?;
        tx.execute_cached(
            "INSERT INTO keyring (kind, version, wrapped, kek_id, active, created_at) VALUES (?1, ?2, ?3, ?4, 1, ?5)",
            params![row.kind, row.version, row.wrapped, row.kek_id, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn reseal_tenant_value(
        &self,
        id: &TenantId,
        which: TenantSeal,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let conn = self.pooled()?;
        let col = which.column();
        let n = conn.execute_cached(
            &format!("UPDATE tenants SET {col} = ?3, row_version = row_version + 1 WHERE id = ?1 AND {col} = ?2"),
            params![id.as_str(), old, new],
        )?;
        Ok(n == 1)
    }

    fn reseal_webhook_secret(
        &self,
        id: &TenantId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let conn = self.pooled()?;
        let n = conn.execute_cached(
            sql::keyring::RESEAL_WEBHOOK_SECRET.sqlite,
            params![id.as_str(), old, new],
        )?;
        Ok(n == 1)
    }
}
