//! Records and whole-installation operations: retention purges, the audit trail, the
//! OtpMint import, backups and the snapshot `migrate-store` copies.

use super::cells::audit_from;
use super::codes::{insert_challenge, Inserted, NewChallenge};
use super::engine::{args, Engine, Exec};
use super::sql::{records as sql, Arg, Shared};
use super::tenants::insert_tenant_row;
use super::{copy, StoreError, MINUTE_MS};
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
    /// Codes not imported because the tenant they go to was imported by an earlier run and
    /// is gone since (deleted, or its secret key rotated out).
    pub codes_without_tenant: usize,
}

pub trait RecordStore {
    /// Delete codes that ended (or expired) before `before`, and send records and test
    /// inbox messages older than `sends_before` (at least an hour ago); returns how many
    /// codes.
    fn purge(&self, before: Millis, sends_before: Millis) -> Result<usize, StoreError>;
    /// A consistent copy of the live database at `path`, its live rows only (SQLite's
    /// `VACUUM INTO`).
    fn backup_to(&self, path: &std::path::Path) -> Result<(), StoreError>;
    /// Hand every row of every table of `copy::TABLES` to `sink`, in parts (see
    /// [`copy::Parts`]), read in one consistent snapshot (one read transaction), so rows
    /// written meanwhile cannot leave a child without its parent.
    fn export_rows(&self, sink: &mut copy::Sink<'_>) -> Result<(), StoreError>;
    /// Write, in one transaction, every row `source` hands the sink it is given: all of it
    /// or nothing (an error of the source's rolls back what was written). Refused
    /// (`Conflict`), before `source` is called, when this database already holds a keyring
    /// or a tenant.
    fn import_rows(&self, source: &mut copy::Source<'_>) -> Result<(), StoreError>;
}

/// The OtpMint import, written once for both backends (`impl<E: Engine> ImportStore for E`).
pub trait ImportStore {
    /// Insert tenants (skipping secrets already registered) and pending codes (skipping
    /// keys already present) in one transaction of its own ([`Engine::exclusive`]): all or
    /// nothing. A code whose owner is not a tenant fails the whole import.
    fn import(
        &self,
        tenants: &[(Tenant, Vec<u8>)],
        codes: &[ImportedCode],
        now: Millis,
    ) -> Result<ImportCounts, StoreError>;
}

impl<E: Engine> ImportStore for E {
    fn import(
        &self,
        tenants: &[(Tenant, Vec<u8>)],
        codes: &[ImportedCode],
        now: Millis,
    ) -> Result<ImportCounts, StoreError> {
        self.exclusive(|tx| import_in(tx, tenants, codes, now))
    }
}

/// Whether `digest` of `kind` was imported before or is present (`exists`); either way it
/// is remembered, so a later run skips it even once it is gone (a code used and purged, a
/// tenant deleted).
fn seen_before(
    tx: &mut dyn Exec,
    (kind, digest): (&str, &[u8]),
    exists: super::sql::Shared,
    now: Millis,
) -> Result<bool, StoreError> {
    let before = tx.row_opt(sql::IMPORTED_BEFORE, args![kind, digest], |r| r.flag(0))?;
    let seen =
        before == Some(true) || tx.row_opt(exists, args![digest], |r| r.flag(0))? == Some(true);
    tx.exec(sql::REMEMBER_IMPORT, args![kind, digest, now])?;
    Ok(seen)
}

/// The import inside the caller's transaction: tenants whose secret is registered already,
/// codes whose key is present already, and anything an earlier run imported (even if it is
/// gone since) are skipped and counted, and so are codes whose tenant is gone.
fn import_in(
    tx: &mut dyn Exec,
    tenants: &[(Tenant, Vec<u8>)],
    codes: &[ImportedCode],
    now: Millis,
) -> Result<ImportCounts, StoreError> {
    let mut counts = ImportCounts::default();
    for (t, digest) in tenants {
        if seen_before(tx, ("tenant", digest), sql::SECRET_EXISTS, now)? {
            counts.tenants_present += 1;
            continue;
        }
        if !insert_tenant_row(tx, t, digest, now)? {
            return Err(StoreError::Conflict("secret key already registered"));
        }
        counts.tenants_added += 1;
    }
    for ic in codes {
        let c = &ic.code;
        if seen_before(tx, ("code", &c.key_digest), sql::CODE_EXISTS, now)? {
            counts.codes_present += 1;
            continue;
        }
        let owner = tx.row_opt(
            sql::TENANT_OF_SECRET,
            args![ic.owner_secret_digest.as_slice()],
            |r| r.text(0),
        )?;
        let Some(owner) = owner else {
            // Its tenant was imported before and is gone since: nothing to give it to (the
            // tenant is not brought back). The rest of the import goes on.
            counts.codes_without_tenant += 1;
            continue;
        };
        insert_challenge(tx, c, &owner, Inserted::imported(c, ic.attempts))?;
        counts.codes_added += 1;
    }
    Ok(counts)
}

/// How many rows one statement of the retention purge deletes at most: a backlog (after
/// downtime, a shorter retention, an import) is deleted batch after batch, each its own
/// transaction, so writes (mints) go on between them (found by the data-volume audit: one
/// delete of 418,000 expired codes held SQLite's writer for 34 s).
pub(crate) const PURGE_BATCH: u64 = 2_000;

/// Run `batch` (a delete of at most [`PURGE_BATCH`] rows, its own transaction) until it
/// deletes fewer; how many it deleted in all.
pub(crate) fn in_batches(
    mut batch: impl FnMut() -> Result<u64, StoreError>,
) -> Result<u64, StoreError> {
    let mut n = 0;
    loop {
        let deleted = batch()?;
        n += deleted;
        if deleted < PURGE_BATCH {
            return Ok(n);
        }
    }
}

/// One batch (at most [`PURGE_BATCH`] rows) of a batched delete: `q` takes the cut-off as
/// `$1` and the batch's size as `$2`. (Each batched delete states its condition again
/// outside the batch's select: PostgreSQL checks a row a delete waited for only by its
/// outer condition.)
pub(crate) fn purge_batch(tx: &mut dyn Exec, q: Shared, cutoff: Millis) -> Result<u64, StoreError> {
    let limit = i64::try_from(PURGE_BATCH).unwrap_or(i64::MAX);
    tx.exec(q, args![cutoff, limit])
}

/// The retention purge's batched deletes past the codes (see [`RecordStore::purge`]), each
/// with its cut-off: the send records (the recipient quotas' history), the SMS guard's
/// sends, the test inbox and the hosted pages' sessions. The codes' own delete comes first
/// (`sql::PURGE_CHALLENGES` at `before`): a code still to be counted as expired unverified
/// (stats_state 1) waits for the count.
pub(crate) fn batched_purges(before: Millis, sends_before: Millis) -> [(Shared, Millis); 4] {
    [
        (sql::PURGE_SENDS, sends_before),
        (super::sql::sms_guard::PURGE, sends_before),
        (sql::PURGE_TEST_INBOX, sends_before),
        (sql::PURGE_HOSTED_SESSIONS, before),
    ]
}

/// The retention purge's other statements (see [`RecordStore::purge`]). Each statement is
/// idempotent, so instances purging at once delete each row once.
pub(crate) fn purge_in(tx: &mut dyn Exec, sends_before: Millis) -> Result<(), StoreError> {
    let minute = sends_before.div_euclid(MINUTE_MS);
    tx.exec(sql::PURGE_TENANT_SEND_MINUTES, args![minute])?;
    tx.exec(sql::PURGE_RECIPIENT_FAILURES, args![sends_before])?;
    tx.exec(sql::PURGE_TEST_SEND_MINUTES, args![minute])?;
    Ok(())
}

/// Whether every event of a batch (`rows`) is stored at least as many times as the batch
/// holds it (`wanted`), to the letter, or belongs to a tenant deleted since.
fn stored_whole(
    tx: &mut dyn Exec,
    rows: &[[Arg; 7]],
    wanted: &[usize],
) -> Result<bool, StoreError> {
    for (row, wanted) in rows.iter().zip(wanted) {
        let found = tx
            .row_opt(sql::AUDIT_STORED, row, |r| r.int(0))?
            .unwrap_or(0);
        // -1: the tenant is gone, and its events with it.
        if found >= 0 && usize::try_from(found).unwrap_or(0) < *wanted {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The audit trail, written once for both backends (`impl<E: Engine> AuditStore for E`).
pub trait AuditStore {
    /// Append events (one transaction). `again`: the batch is written again after a failure
    /// whose commit may have happened all the same (its answer was lost with the
    /// connection): a batch found stored whole is not stored twice.
    fn append_audit(&self, events: &[AuditEvent], again: bool) -> Result<(), StoreError>;
    /// A tenant's events, newest first, with ids below `before`.
    fn audit_page(
        &self,
        tenant: &TenantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// The newest event's id, of any tenant (0: none yet): no page cursor names a larger one.
    fn newest_audit_id(&self) -> Result<i64, StoreError>;
    /// Delete events older than `before`.
    fn purge_audit(&self, before: Millis) -> Result<usize, StoreError>;
    /// True when the database holds any tenant.
    fn has_tenants(&self) -> Result<bool, StoreError>;
}

impl<E: Engine> AuditStore for E {
    fn append_audit(&self, events: &[AuditEvent], again: bool) -> Result<(), StoreError> {
        let rows: Vec<[Arg; 7]> = events
            .iter()
            .map(|e| {
                [
                    e.tenant_id.as_str().into(),
                    e.at.into(),
                    e.event.as_str().into(),
                    e.recipient.clone().into(),
                    e.outcome.as_str().into(),
                    e.client_ip.clone().into(),
                    e.request_id.clone().into(),
                ]
            })
            .collect();
        // How many times the batch holds each of its events (only a batch written again
        // asks).
        let wanted: Vec<usize> = if again {
            events
                .iter()
                .map(|e| events.iter().filter(|o| *o == e).count())
                .collect()
        } else {
            Vec::new()
        };
        self.transact(move |tx| {
            // A batch commits whole or not at all: written again, it is stored already when
            // each of its events is, as many times as the batch holds it.
            if again && stored_whole(tx, &rows, &wanted)? {
                return Ok(());
            }
            // A tenant deleted meanwhile has no audit: skip its events.
            for row in &rows {
                tx.exec(sql::APPEND_AUDIT, row)?;
            }
            Ok(())
        })
    }

    fn audit_page(
        &self,
        tenant: &TenantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let q = args![tenant.as_str(), before.unwrap_or(i64::MAX), limit];
        self.rows(sql::AUDIT_PAGE, q, |r| audit_from(r))
    }

    fn newest_audit_id(&self) -> Result<i64, StoreError> {
        Ok(self
            .row_opt(sql::NEWEST_AUDIT_ID, &[], |r| r.int(0))?
            .unwrap_or(0))
    }

    fn purge_audit(&self, before: Millis) -> Result<usize, StoreError> {
        // In batches, each its own transaction (see [`PURGE_BATCH`]).
        let args = [
            Arg::from(before),
            Arg::from(i64::try_from(PURGE_BATCH).unwrap_or(i64::MAX)),
        ];
        let n = in_batches(|| self.exec_one(sql::PURGE_AUDIT, &args))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn has_tenants(&self) -> Result<bool, StoreError> {
        let any = self.row_opt(super::sql::keyring::ANY_TENANT, &[], |r| r.flag(0))?;
        Ok(any == Some(true))
    }
}
