//! The keyring aggregate: the wrapped data keys and pepper, and the re-encryption of what is
//! sealed under them (SMTP passwords, webhook secrets) when a key rotates.

use super::cells::wrapped_key_from;
use super::engine::{args, Engine};
use super::sql::{keyring as sql, Arg, Shared};
use super::StoreError;
use crate::crypto::keyring::WrappedKey;
use crate::domain::keys::TenantId;
use crate::domain::recipient::Channel;
use crate::domain::Millis;

pub trait KeyringStore {
    fn keyring(&self) -> Result<Vec<WrappedKey>, StoreError>;
    /// Store a fresh keyring if none exists (one transaction, under a lock: instances that
    /// start together all get the first one); returns the rows now stored. `Conflict` when
    /// there is no keyring but there are tenants (their secrets cannot be opened).
    fn init_keyring(&self, rows: &[WrappedKey], now: Millis)
        -> Result<Vec<WrappedKey>, StoreError>;
    /// Store `row` (its kind and version: the keyring row; its `wrapped` and `kek_id`: the
    /// new wrapping) if that row is still wrapped by `old_kek_id` (compare-and-swap).
    fn rewrap_key(&self, row: &WrappedKey, old_kek_id: &str) -> Result<bool, StoreError>;
    /// Add a data key and make it the only active one.
    fn add_data_key(&self, row: &WrappedKey, now: Millis) -> Result<(), StoreError>;
    /// Replace a value sealed on a tenant's row if it is still `old` (compare-and-swap; a
    /// data-key rotation re-sealing it).
    fn reseal_tenant_value(
        &self,
        id: &TenantId,
        which: TenantSeal,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError>;
    /// Replace a tenant's sealed webhook secret if it is still `old` (compare-and-swap; a
    /// data-key rotation re-sealing the same secret).
    fn reseal_webhook_secret(
        &self,
        id: &TenantId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError>;
}

/// A value sealed with the data key on a tenant's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantSeal {
    SmtpPassword,
    FallbackPassword,
    HttpSecret,
    /// A channel's provider's secrets.
    ProviderSecrets(Channel),
    DkimPrivate,
}

impl TenantSeal {
    /// Its column.
    pub(crate) fn column(self) -> &'static str {
        match self {
            TenantSeal::SmtpPassword => "smtp_password",
            TenantSeal::FallbackPassword => "fallback_password",
            TenantSeal::HttpSecret => "http_secret",
            TenantSeal::ProviderSecrets(channel) => super::cells::provider_columns(channel).secrets,
            TenantSeal::DkimPrivate => "dkim_private",
        }
    }
}

/// Transaction advisory lock around keyring initialisation (and a snapshot import) on
/// PostgreSQL.
pub(crate) const KEYRING_LOCK: i64 = 0x6f74_706d_696e_7402;

/// Take [`KEYRING_LOCK`] (`$1`) until the transaction ends: instances that start together
/// take turns. SQLite's transaction is IMMEDIATE already: a read that does nothing.
const LOCK_KEYRING: Shared = Shared {
    sqlite: "SELECT ?1",
    pg: "SELECT pg_advisory_xact_lock($1)",
};

impl<E: Engine> KeyringStore for E {
    fn keyring(&self) -> Result<Vec<WrappedKey>, StoreError> {
        self.rows(sql::KEYRING, &[], |r| wrapped_key_from(r))
    }

    fn init_keyring(
        &self,
        rows: &[WrappedKey],
        now: Millis,
    ) -> Result<Vec<WrappedKey>, StoreError> {
        // One instance makes the keyring; the others, waiting on the lock, find it made.
        self.exclusive(|tx| {
            tx.row_opt(LOCK_KEYRING, args![KEYRING_LOCK], |_| Ok(()))?;
            let existing = tx.row_opt(sql::KEYRING_ROWS, &[], |r| r.int(0))?;
            let tenants = tx.row_opt(sql::ANY_TENANT, &[], |r| r.flag(0))?;
            let empty = existing.unwrap_or(0) == 0;
            if empty && tenants == Some(true) {
                return Err(StoreError::Conflict(
                    "the database holds tenants but no keyring",
                ));
            }
            if empty {
                for k in rows {
                    let row = args![
                        k.kind.as_str(),
                        k.version,
                        k.wrapped.as_slice(),
                        k.kek_id.as_str(),
                        k.active,
                        now,
                    ];
                    tx.exec(sql::INSERT_KEY, row)?;
                }
            }
            Ok(())
        })?;
        self.keyring()
    }

    fn rewrap_key(&self, row: &WrappedKey, old_kek_id: &str) -> Result<bool, StoreError> {
        let row = args![
            row.kind.as_str(),
            row.version,
            row.wrapped.as_slice(),
            row.kek_id.as_str(),
            old_kek_id
        ];
        Ok(self.exclusive(|tx| tx.exec(sql::REWRAP_KEY, row))? == 1)
    }

    fn add_data_key(&self, row: &WrappedKey, now: Millis) -> Result<(), StoreError> {
        // The primary key (kind, version) refuses a version another rotation took first.
        let kind = Arg::from(row.kind.as_str());
        let key = [
            kind.clone(),
            row.version.into(),
            row.wrapped.as_slice().into(),
            row.kek_id.as_str().into(),
            true.into(),
            now.into(),
        ];
        self.exclusive(|tx| {
            tx.exec(sql::DEACTIVATE_KEYS, &[kind, false.into()])?;
            tx.exec(sql::INSERT_KEY, &key)?;
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
        let (col, d) = (which.column(), self.dialect());
        let (p1, p2, p3) = (d.placeholder(1), d.placeholder(2), d.placeholder(3));
        let text = format!(
            "UPDATE tenants SET {col} = {p3}, row_version = row_version + 1 WHERE id = {p1} AND \
             {col} = {p2}"
        );
        let row = args![id.as_str(), old, new];
        Ok(self.exclusive(|tx| tx.exec_text(&text, row))? == 1)
    }

    fn reseal_webhook_secret(
        &self,
        id: &TenantId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let row = args![id.as_str(), old, new];
        Ok(self.exclusive(|tx| tx.exec(sql::RESEAL_WEBHOOK_SECRET, row))? == 1)
    }
}
