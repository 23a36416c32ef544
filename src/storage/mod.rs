//! Storage: the only module with SQL. Small traits, one per aggregate — tenants, codes, the
//! outbox, integration (webhooks, events, idempotency keys), quotas, the keyring, records,
//! test mode, statistics, and smaller ones; [`Store`] is their bundle. An aggregate
//! whose SQL both backends agree on (or differs only in text) is written once, beside its
//! trait, over the `engine` each backend implements; one whose locking or batching differs
//! is implemented by each backend next to its SQL (`sqlite/<aggregate>.rs`,
//! `postgres/<aggregate>.rs`). What a result means (what
//! supersedes what, what a sweep does, when a send is given back to the quotas) is decided
//! once, in [`rules`], for both backends; rows are read into domain types once, in `cells`.

mod cells;
mod codes;
pub mod copy;
mod engine;
mod error;
pub mod hosted;
pub mod integration;
mod keyring;
pub mod links;
mod outbox;
pub mod postgres;
pub mod provider_events;
mod quota;
mod records;
pub mod rules;
mod settle;
pub mod sms_guard;
mod sql;
pub mod sqlite;
pub mod stats;
pub mod suppressions;
mod tenants;
pub mod test_mode;

pub use codes::{
    AttemptAsk, ClaimStore, CodeKey, CodeOutcomeStore, CodeStore, Lease, NewChallenge, NewLink,
    NewOutbox, Queued, Resend, ResendVia, Resent, Reservation, Reserved, StagedAnswers,
    VerifyFinish,
};
pub use error::{disk_full_lately, StoreError};
pub use hosted::{HostedStore, Session, SessionFinisher, SessionRow};
pub use integration::{EventClaimStore, IntegrationStore};
pub use keyring::{KeyringStore, TenantSeal};
pub use links::{LinkFinisher, LinkStore, LinkView};
pub use outbox::{
    AttemptFailure, AttemptRecord, ClaimRequest, Claimed, Fairness, OutboxJob, OutboxStats,
    OutboxStore, SweepCandidate, SweepItem,
};
pub use outbox::{Keep, Unsent};
pub use provider_events::{EventEffect, ProviderEventStore, SeenEvent};
pub use quota::{QuotaAsk, QuotaChecked, QuotaRefusal, QuotaStore, SendQuota};
pub(crate) use quota::{HOUR_MS, MINUTE_MS};
pub use records::{AuditStore, ImportCounts, ImportStore, ImportedCode, RecordStore};
pub use settle::SettleStore;
pub use sms_guard::{SmsGuardStore, SmsSend, SmsTaken, SmsVelocity, SmsVelocityRefusal};
pub use stats::{StatsQuery, StatsRow, StatsStore};
pub use suppressions::SuppressionStore;
pub use tenants::{PutTemplate, TenantChanges, TenantStore, Updated};
pub use test_mode::{InboxEntry, InboxRow, TestGuess, TestStore};

/// A store call handed to [`Store::submit`]: it runs once, where the store's writes are
/// cheapest, and then learns whether what it wrote is durable.
pub trait WriteCall: Send {
    /// Make the call; what it returns is told the outcome of the commit that holds its
    /// writes (`Ok` once they are durable).
    fn run(self: Box<Self>) -> Box<dyn FnOnce(Result<(), StoreError>) + Send>;
    /// The call was never made.
    fn fail(self: Box<Self>, e: StoreError);
}

/// Every persisted operation: the aggregates' traits, and the store's own health. Methods
/// are blocking: callers run them off the async workers. Every tenant-owned query takes the
/// tenant first; another tenant's row is no row.
pub trait Store:
    TenantStore
    + CodeStore
    + CodeOutcomeStore
    + OutboxStore
    + SettleStore
    + IntegrationStore
    + EventClaimStore
    + QuotaStore
    + KeyringStore
    + RecordStore
    + ImportStore
    + AuditStore
    + TestStore
    + StatsStore
    + LinkStore
    + HostedStore
    + SuppressionStore
    + SmsGuardStore
    + ProviderEventStore
    + ClaimStore
    + Send
    + Sync
    + 'static
{
    /// Whether the database answers a read.
    fn ping(&self) -> Result<(), StoreError>;

    /// A write that changes nothing but needs the write lock: whether writes succeed now.
    fn write_probe(&self) -> Result<(), StoreError>;

    /// The bytes free for the database's files, where this process sees their disk (SQLite's
    /// directory); `None` where it cannot (a PostgreSQL server's). The write probe takes no
    /// space, so readiness asks this to see a full disk (API.md §6.24).
    fn disk_free(&self) -> Option<u64> {
        None
    }

    /// Whether the database's files are on a file system mounted read-only now, where this
    /// process sees it (SQLite's directory); false where it cannot.
    fn disk_read_only(&self) -> bool {
        false
    }

    /// Whether a write that took space committed within `within` (where that is known:
    /// SQLite's writer); true where it is not, so that readiness writes nothing there.
    fn wrote_within(&self, _within: std::time::Duration) -> bool {
        true
    }

    /// A write that takes space and changes nothing (where [`Store::disk_free`] is known):
    /// whether the disk takes writes again after one met it full though the free space
    /// showed room.
    fn space_probe(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The server is stopping and has written what it had to: empty what holds earlier
    /// copies of pages beside the database (SQLite's `-wal`: deleted rows' page images stay
    /// there until SQLite writes over them). Nothing where there is none.
    fn at_stop(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Run a call made of this store's writes (and the few indexed reads they need) on the
    /// store's own write thread, if it has one (SQLite's group-commit writer): its writes
    /// join the next batch and nobody blocks a thread waiting for the commit. Its reads run
    /// on the batch's connection and see the batch. A store without one gives the call back
    /// (`Err`), and the caller makes it on the blocking pool. Reads there are serial with
    /// every write: keep them to single-row lookups.
    fn submit(&self, call: Box<dyn WriteCall>) -> Result<(), Box<dyn WriteCall>> {
        Err(call)
    }
}

/// How many migrations a run applied, said in the log when there were any (their names).
fn said_migrated(report: &refinery::Report) -> usize {
    let applied = report.applied_migrations();
    if !applied.is_empty() {
        let names: Vec<String> = applied.iter().map(ToString::to_string).collect();
        tracing::info!(migrations = %names.join(", "), "migrated the database");
    }
    applied.len()
}
