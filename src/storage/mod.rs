//! Storage: the `Store` trait, the only door to persisted state, and its two
//! implementations: SQLite (embedded, one instance) and PostgreSQL (any number of instances).

pub mod copy;
mod error;
pub mod integration;
pub mod postgres;
mod quota;
pub mod sqlite;

pub use error::StoreError;
pub use quota::{QuotaRefusal, SendQuota};
pub(crate) use quota::{HOUR_MS, MINUTE_MS};

use crate::crypto::keyring::WrappedKey;
use crate::domain::audit::AuditEvent;
use crate::domain::challenge::{ChallengeView, StoredStatus};
use crate::domain::delivery::DeliveryMode;
use crate::domain::keys::{Flavor, TenantId};
use crate::domain::locale::Locale;
use crate::domain::policy::Policy;
use crate::domain::tenant::{Origin, Sender, SmtpAccount, SmtpHost, Tenant, TenantName, TlsMode};
use crate::domain::Millis;

/// A tenant's own template for one locale (sources, not rendered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRow {
    pub locale: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub updated_at: Millis,
}

/// Changes to a tenant; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantChanges {
    pub name: Option<TenantName>,
    pub enabled: Option<bool>,
    pub smtp: Option<SmtpAccount>,
    pub policy: Option<Policy>,
    pub delivery: Option<DeliveryMode>,
    pub default_locale: Option<Locale>,
}

/// A message settled by the sweep: its code expired before the relay took it (`expired`,
/// its delivery failed) or the code ended otherwise first.
#[derive(Debug, Clone)]
pub struct Swept {
    pub tenant_id: TenantId,
    pub key_digest: Vec<u8>,
    pub payload: Vec<u8>,
    pub expired: bool,
}

/// A challenge to insert (status `pending`, delivery `queued`).
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
    pub delivery_mode: DeliveryMode,
    /// The locale the message was written in (`None`: imported from OtpMint).
    pub locale: Option<String>,
}

/// The outgoing message of a new code, stored in the same commit as the code.
#[derive(Debug, Clone)]
pub struct NewOutbox {
    /// The delivery address (local part as given, ASCII domain).
    pub recipient: String,
    /// The rendered message, sealed with the data key.
    pub payload: Vec<u8>,
    /// Set for a sync mint: the row starts leased by the minting instance, which sends it
    /// at once; if that instance dies, the lease expires and any sender takes it.
    pub lease: Option<Lease>,
}

#[derive(Debug, Clone)]
pub struct Lease {
    pub until: Millis,
    pub owner: String,
}

/// Which due outbox rows a sender takes.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub now: Millis,
    pub lease: Lease,
    pub limit: u32,
    /// Tenants whose sessions are all busy here: leave their rows for later.
    pub exclude_tenants: Vec<String>,
}

/// One claimed message.
#[derive(Debug, Clone)]
pub struct OutboxJob {
    pub key_digest: Vec<u8>,
    pub tenant_id: TenantId,
    pub recipient: String,
    pub payload: Vec<u8>,
    /// Attempts made before this one.
    pub attempts: u32,
    pub expires_at: Millis,
    pub mode: DeliveryMode,
}

/// What an outbox row reports about itself for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub depth: u64,
    /// How long the longest-waiting due message has been due.
    pub oldest_due_ms: Millis,
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
    /// The locale its message was written in (`None` for imported codes).
    pub locale: Option<String>,
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

/// A store call handed to [`Store::submit`]: it runs once, where the store's writes are
/// cheapest, and then learns whether what it wrote is durable.
pub trait WriteCall: Send {
    /// Make the call; what it returns is told the outcome of the commit that holds its
    /// writes (`Ok` once they are durable).
    fn run(self: Box<Self>) -> Box<dyn FnOnce(Result<(), StoreError>) + Send>;
    /// The call was never made.
    fn fail(self: Box<Self>, e: StoreError);
}

/// Every persisted operation. Methods are blocking: callers run them off the async workers.
/// Every tenant-owned query takes the tenant first; another tenant's row is no row.
pub trait Store: Send + Sync + 'static {
    fn ping(&self) -> Result<(), StoreError>;

    /// Run a call made of this store's writes (and the few indexed reads they need) on the
    /// store's own write thread, if it has one (SQLite's group-commit writer): its writes
    /// join the next batch and nobody blocks a thread waiting for the commit. Its reads run
    /// on the batch's connection and see the batch. A store without one gives the call back
    /// (`Err`), and the caller makes it on the blocking pool. Reads there are serial with
    /// every write: keep them to single-row lookups.
    fn submit(&self, call: Box<dyn WriteCall>) -> Result<(), Box<dyn WriteCall>> {
        Err(call)
    }

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
    /// Replace a tenant's sealed webhook secret if it is still `old` (compare-and-swap; a
    /// data-key rotation re-sealing the same secret).
    fn reseal_webhook_secret(
        &self,
        id: &TenantId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError>;
    /// A consistent copy of the live database at `path` (SQLite's online backup API).
    fn backup_to(&self, path: &std::path::Path) -> Result<(), StoreError>;
    /// True when the database holds a keyring or any tenant.
    fn has_data(&self) -> Result<bool, StoreError>;

    // tenants
    fn insert_tenant(
        &self,
        t: &Tenant,
        secret_digest: &[u8],
        now: Millis,
    ) -> Result<(), StoreError>;
    fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError>;
    fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    fn update_tenant(
        &self,
        id: &TenantId,
        c: &TenantChanges,
        now: Millis,
    ) -> Result<Option<Tenant>, StoreError>;
    fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError>;
    /// The tenant's own templates, by locale.
    fn templates(&self, id: &TenantId) -> Result<Vec<TemplateRow>, StoreError>;
    /// Store (insert or replace) a template and bump the tenant's `templates_version`;
    /// false when there is no such tenant.
    fn put_template(&self, id: &TenantId, t: &TemplateRow) -> Result<bool, StoreError>;
    /// Remove a template and bump `templates_version`; false when there was none.
    fn delete_template(&self, id: &TenantId, locale: &str) -> Result<bool, StoreError>;
    // webhooks and idempotency keys (API.md §9)
    /// Create or replace the tenant's webhook (a replacement keeps the stored secret) and
    /// copy its event types onto the tenant row. `None`: no such tenant; `Some(true)`:
    /// created.
    fn put_webhook(
        &self,
        id: &TenantId,
        w: &integration::WebhookRow,
    ) -> Result<Option<bool>, StoreError>;
    fn webhook(&self, id: &TenantId) -> Result<Option<integration::WebhookRow>, StoreError>;
    /// Remove the webhook and its undelivered events; false when there was none.
    fn delete_webhook(&self, id: &TenantId) -> Result<bool, StoreError>;
    fn set_webhook_secret(
        &self,
        id: &TenantId,
        sealed: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Queue an event, if the tenant still subscribes to its type.
    fn insert_event(&self, e: &integration::NewEvent) -> Result<bool, StoreError>;
    /// Lease due pending events (oldest first, at most `limit`).
    fn claim_events(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<integration::EventJob>, StoreError>;
    /// Record an attempt and its outcome, if `owner` still holds the event's lease.
    #[allow(clippy::too_many_arguments)]
    fn settle_event(
        &self,
        event_id: &str,
        owner: &str,
        attempt: u32,
        outcome: integration::EventOutcome,
        status_code: Option<u16>,
        error: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError>;
    /// The newest delivery attempts of a tenant, newest first.
    fn webhook_deliveries(
        &self,
        id: &TenantId,
        limit: u32,
    ) -> Result<Vec<integration::DeliveryRow>, StoreError>;
    /// Claim an idempotency key, or say what holds it (one atomic step).
    fn idem_begin(&self, c: &integration::IdemClaim) -> Result<integration::IdemBegin, StoreError>;
    /// Keep the answer of the request that holds the key (`holder`: its claim's token; a
    /// request whose claim was taken over changes nothing).
    fn idem_finish(
        &self,
        id: &TenantId,
        key_digest: &[u8],
        holder: &str,
        status: u16,
        response: &[u8],
    ) -> Result<(), StoreError>;
    /// Free a key whose request got an answer that is not kept (only the holder's claim).
    fn idem_release(
        &self,
        id: &TenantId,
        key_digest: &[u8],
        holder: &str,
    ) -> Result<(), StoreError>;
    /// Delete expired idempotency keys, and settled events and delivery records older than
    /// `records_before`.
    fn purge_integration(&self, now: Millis, records_before: Millis) -> Result<usize, StoreError>;

    /// The enabled tenant whose current (or in-grace) secret has this digest.
    fn tenant_by_secret(&self, digest: &[u8], now: Millis) -> Result<Option<Tenant>, StoreError>;
    /// Replace the tenant's secret; older secrets stop at `old_until` (now: at once).
    fn rotate_secret(
        &self,
        id: &TenantId,
        new_digest: &[u8],
        old_until: Millis,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// A write that changes nothing but needs the write lock: whether writes succeed now.
    fn write_probe(&self) -> Result<(), StoreError>;

    // challenges and their outbox
    /// Store a code and its outgoing message in one durable commit, after checking and
    /// counting the quotas `q` in the same transaction (none when `q` is `None`). The code
    /// is `pending` with the next sequence number of its (tenant, recipient, purpose,
    /// flavor) group and delivery `queued`; nothing is superseded yet.
    fn insert_code(
        &self,
        c: &NewChallenge,
        m: &NewOutbox,
        q: Option<&SendQuota>,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError>;
    /// Lease due outbox rows of live, pending codes of enabled tenants: at most `limit`,
    /// and per tenant at most its `max_connections`.
    fn claim_outbox(&self, c: &ClaimRequest) -> Result<Vec<OutboxJob>, StoreError>;
    /// The relay accepted the message: delivery `sent`, the outbox row gone, and the
    /// group's older pending, live codes superseded — one transaction.
    /// `event`: its webhook event, written in the same transaction (if the tenant
    /// subscribes) when this call settles the message.
    fn outbox_sent(
        &self,
        key_digest: &[u8],
        attempts: u32,
        now: Millis,
        event: Option<&integration::NewEvent>,
    ) -> Result<(), StoreError>;
    /// A transient failure: try again at `due_at` (only if `owner` still holds the lease).
    fn outbox_retry(
        &self,
        key_digest: &[u8],
        owner: &str,
        attempts: u32,
        due_at: Millis,
        reason: &str,
        maybe_delivered: bool,
    ) -> Result<(), StoreError>;
    /// Give up: the code becomes `failed` (it can never verify), the outbox row goes, and
    /// the quota charge is given back unless some attempt may have reached the relay.
    #[allow(clippy::too_many_arguments)]
    fn outbox_failed(
        &self,
        key_digest: &[u8],
        attempts: u32,
        reason: &str,
        maybe_delivered: bool,
        now: Millis,
        event: Option<&integration::NewEvent>,
    ) -> Result<(), StoreError>;
    /// Settle unleased outbox rows whose code expired (delivery failed, `expired`) or ended
    /// otherwise before its message left (`not_sent`); returns how many.
    fn outbox_sweep(&self, now: Millis) -> Result<Vec<Swept>, StoreError>;
    fn outbox_stats(&self, now: Millis) -> Result<OutboxStats, StoreError>;
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
    /// `pending` → `verified` if still pending and unexpired; false otherwise. When the
    /// verify succeeds, `event` (`otp.verified`) is written and the failure budget of
    /// `clear_failures_of` (a recipient) is reset, in the same transaction.
    fn finish_verify(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        now: Millis,
        event: Option<&integration::NewEvent>,
        clear_failures_of: Option<&str>,
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
        tenants: &[(Tenant, Vec<u8>)],
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
    /// The same checks as `take_send`, counting nothing (a cheap read before hashing).
    fn check_quota(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError>;
    /// Whether the recipient's failure budget is spent (and until when).
    fn failures_blocked(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError>;

    // migrate-store
    /// Every row of every table of `copy::TABLES`, read in one consistent snapshot (one read
    /// transaction), so rows written meanwhile cannot leave a child without its parent.
    fn export_snapshot(&self) -> Result<copy::Snapshot, StoreError>;
    /// Write a snapshot in one transaction: all of it or nothing. Refused (`Conflict`) when
    /// this database already holds a keyring or a tenant.
    fn import_snapshot(&self, s: &copy::Snapshot) -> Result<(), StoreError>;
}

pub(crate) fn delivery_mode_from(s: &str) -> Result<DeliveryMode, StoreError> {
    DeliveryMode::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown delivery mode {s}")))
}

pub(crate) fn status_from(s: &str) -> Result<StoredStatus, StoreError> {
    StoredStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown status {s}")))
}
