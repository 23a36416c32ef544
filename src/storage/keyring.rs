//! The keyring aggregate: the wrapped data keys and pepper, and the re-encryption of what is
//! sealed under them (SMTP passwords, webhook secrets) when a key rotates.

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
    /// Re-wrap one keyring row, if it is still wrapped by `old_kek_id` (compare-and-swap).
    fn rewrap_key(
        &self,
        kind: &str,
        version: u32,
        wrapped: &[u8],
        kek_id: &str,
        old_kek_id: &str,
    ) -> Result<bool, StoreError>;
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
