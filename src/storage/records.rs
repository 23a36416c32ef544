//! Records and whole-installation operations: retention purges, the audit trail, the
//! OtpMint import, backups and the snapshot `migrate-store` copies.

use super::codes::NewChallenge;
use super::{copy, StoreError};
use crate::domain::audit::AuditEvent;
use crate::domain::keys::TenantId;
use crate::domain::tenant::Tenant;
use crate::domain::Millis;

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

pub trait RecordStore {
    /// Delete codes that ended (or expired) before `before`, and send records and test
    /// inbox messages older than `sends_before` (at least an hour ago); returns how many
    /// codes.
    fn purge(&self, before: Millis, sends_before: Millis) -> Result<usize, StoreError>;
    /// Insert tenants (skipping secrets already registered) and pending codes (skipping
    /// keys already present) in one transaction: all or nothing.
    fn import(
        &self,
        tenants: &[(Tenant, Vec<u8>)],
        codes: &[ImportedCode],
        now: Millis,
    ) -> Result<ImportCounts, StoreError>;
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
    /// A consistent copy of the live database at `path` (SQLite's online backup API).
    fn backup_to(&self, path: &std::path::Path) -> Result<(), StoreError>;
    /// True when the database holds any tenant.
    fn has_tenants(&self) -> Result<bool, StoreError>;
    /// Every row of every table of `copy::TABLES`, read in one consistent snapshot (one read
    /// transaction), so rows written meanwhile cannot leave a child without its parent.
    fn export_snapshot(&self) -> Result<copy::Snapshot, StoreError>;
    /// Write a snapshot in one transaction: all of it or nothing. Refused (`Conflict`) when
    /// this database already holds a keyring or a tenant.
    fn import_snapshot(&self, s: &copy::Snapshot) -> Result<(), StoreError>;
}
