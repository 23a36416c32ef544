//! Storage: the `Store` trait, the only door to persisted state, and its SQLite implementation.

pub mod sqlite;

use crate::crypto::keyring::WrappedKey;
use crate::domain::challenge::{ChallengeView, StoredStatus};
use crate::domain::keys::{Flavor, TenantId};
use crate::domain::policy::Policy;
use crate::domain::Millis;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("database pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration: {0}")]
    Migration(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("commit failed: {0}")]
    Commit(String),
}

/// A tenant's SMTP settings as stored (password encrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpRow {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: Vec<u8>,
    pub from: String,
    pub tls: String,
}

#[derive(Debug, Clone)]
pub struct TenantRow {
    pub id: TenantId,
    pub name: String,
    pub enabled: bool,
    pub origin: String,
    pub created_at: Millis,
    pub smtp: SmtpRow,
    /// Bumped on every SMTP change, so cached transports know they are stale.
    pub smtp_version: i64,
    pub policy: Policy,
}

/// Changes to a tenant; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantChanges {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub smtp: Option<SmtpRow>,
    pub policy: Option<Policy>,
}

/// A challenge to insert (status `sending`).
#[derive(Debug, Clone)]
pub struct NewChallenge {
    pub key_digest: Vec<u8>,
    pub tenant_id: TenantId,
    pub flavor: Flavor,
    pub email: String,
    pub email_canonical: String,
    pub purpose: String,
    pub code_hash: String,
    pub max_attempts: u32,
    pub code_length: u32,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// An attempt reserved atomically: the hash to compare against and the attempt count
/// after the reservation.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub code_hash: String,
    pub attempts: u32,
    pub max_attempts: u32,
    pub email: String,
    pub email_canonical: String,
    pub purpose: String,
}

/// A pending code carried over from another system (OtpMint's `mappings`).
#[derive(Debug, Clone)]
pub struct ImportedCode {
    /// The secret digest of the tenant that will own the code.
    pub owner_secret_digest: Vec<u8>,
    pub code: NewChallenge,
    pub attempts: u32,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub tenants_added: usize,
    pub tenants_present: usize,
    pub codes_added: usize,
    pub codes_present: usize,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    pub tenant_id: String,
    pub at: Millis,
    pub event: String,
    pub recipient: String,
    pub outcome: String,
    pub client_ip: String,
    pub request_id: String,
}

/// Quotas to check and count in one atomic step at mint.
#[derive(Debug, Clone, Copy)]
pub struct SendQuota {
    pub recipient_max: u32,
    pub recipient_window_ms: Millis,
    pub cooldown_ms: Millis,
    pub tenant_max_per_hour: u32,
    pub max_failures: u32,
}

impl SendQuota {
    /// Whether any limit is on (all off: nothing to check or count at mint).
    pub fn any(&self) -> bool {
        self.recipient_max > 0
            || self.cooldown_ms > 0
            || self.tenant_max_per_hour > 0
            || self.max_failures > 0
    }
}

/// Which quota refused a send, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    Recipient { retry_after_ms: Millis },
    Cooldown { retry_after_ms: Millis },
    Tenant { retry_after_ms: Millis },
    Failures { retry_after_ms: Millis },
}

/// Every persisted operation. Methods are blocking: callers run them off the async workers.
/// Every tenant-owned query takes the tenant first; another tenant's row is no row.
pub trait Store: Send + Sync + 'static {
    fn ping(&self) -> Result<(), StoreError>;

    // keyring
    fn keyring(&self) -> Result<Vec<WrappedKey>, StoreError>;
    /// Store a fresh keyring if none exists; returns the rows now stored.
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
    /// Replace a tenant's encrypted SMTP password if it is still `old` (compare-and-swap).
    fn set_smtp_password(&self, id: &TenantId, old: &[u8], new: &[u8]) -> Result<bool, StoreError>;
    /// A consistent copy of the live database at `path` (SQLite's online backup API).
    fn backup_to(&self, path: &std::path::Path) -> Result<(), StoreError>;
    /// True when the database holds a keyring or any tenant.
    fn has_data(&self) -> Result<bool, StoreError>;

    // tenants
    fn insert_tenant(
        &self,
        t: &TenantRow,
        secret_digest: &[u8],
        now: Millis,
    ) -> Result<(), StoreError>;
    fn tenant(&self, id: &TenantId) -> Result<Option<TenantRow>, StoreError>;
    fn tenants(&self) -> Result<Vec<TenantRow>, StoreError>;
    fn update_tenant(
        &self,
        id: &TenantId,
        c: &TenantChanges,
        now: Millis,
    ) -> Result<Option<TenantRow>, StoreError>;
    fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError>;
    /// The enabled tenant whose current (or in-grace) secret has this digest.
    fn tenant_by_secret(&self, digest: &[u8], now: Millis)
        -> Result<Option<TenantRow>, StoreError>;
    /// Replace the tenant's secret; older secrets stop at `old_until` (now: at once).
    fn rotate_secret(
        &self,
        id: &TenantId,
        new_digest: &[u8],
        old_until: Millis,
        now: Millis,
    ) -> Result<bool, StoreError>;

    // challenges
    /// Store a code whose message the SMTP server accepted, in one transaction: inserted
    /// `pending` with the next sequence number of its (tenant, recipient, purpose, flavor),
    /// superseding that group's older pending codes. Nothing is stored for a code whose
    /// message was not accepted, so it can never verify.
    fn insert_sent(&self, c: &NewChallenge, now: Millis) -> Result<(), StoreError>;
    /// Reserve one guess: only for a pending, unexpired, unexhausted code whose recipient's
    /// failure budget (`q`) is not spent; the guess counts against that budget at once (a
    /// match clears it). One transaction, so atomic under any concurrency.
    /// `code_len` must match the code's length (a wrong length is no guess).
    fn reserve_attempt(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
        code_len: u32,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Option<Reservation>, StoreError>;
    /// Give back a reserved attempt that was never evaluated.
    /// Also gives back the recipient's failure budget that the reservation took.
    fn release_attempt(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        recipient: &str,
    ) -> Result<(), StoreError>;
    /// `pending` → `verified` if still pending and unexpired; false otherwise.
    fn finish_verify(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// The enabled tenant a code belongs to (for OtpMint's verify, which names no tenant).
    fn challenge_owner(
        &self,
        key_digest: &[u8],
        flavor: Flavor,
    ) -> Result<Option<TenantId>, StoreError>;
    fn challenge(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
    ) -> Result<Option<ChallengeView>, StoreError>;
    /// Cancel a pending code: `Some((true, view))` cancelled, `Some((false, view))` it had
    /// already ended, `None` unknown.
    fn cancel(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
        now: Millis,
    ) -> Result<Option<(bool, ChallengeView)>, StoreError>;
    /// Delete codes that ended (or expired) before `before` and send records older than
    /// `sends_before`; returns how many codes.
    fn purge(&self, before: Millis, sends_before: Millis) -> Result<usize, StoreError>;

    /// Insert tenants (skipping secrets already registered) and pending codes (skipping
    /// keys already present) in one transaction: all or nothing.
    fn import(
        &self,
        tenants: &[(TenantRow, Vec<u8>)],
        codes: &[ImportedCode],
        now: Millis,
    ) -> Result<ImportCounts, StoreError>;

    // audit
    /// Append events (one transaction).
    fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
    /// A tenant's events, newest first, with ids below `before`.
    fn audit_page(
        &self,
        tenant: &TenantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// Delete events older than `before`.
    fn purge_audit(&self, before: Millis) -> Result<usize, StoreError>;

    // quotas
    /// Check every quota and, if all allow it, count one send — atomically.
    fn take_send(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError>;
    /// Give back a send that never reached the SMTP server.
    fn refund_send(&self, tenant: &TenantId, recipient: &str, at: Millis)
        -> Result<(), StoreError>;
    /// Whether the recipient's failure budget is spent (and until when).
    fn failures_blocked(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError>;
    fn clear_failures(&self, tenant: &TenantId, recipient: &str) -> Result<(), StoreError>;
}

pub(crate) fn status_from(s: &str) -> Result<StoredStatus, StoreError> {
    StoredStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown status {s}")))
}
