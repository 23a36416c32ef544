//! The audit trail: events are queued by requests and written in batches by one background
//! task, so a request never waits for an extra durable commit; `flush` drains the queue
//! (used at shutdown). The queue is bounded: a request takes its place in it before it does
//! its work, and a full queue (the database has been away a while) refuses the request with
//! 503 before it changes anything — no event is lost, no task waits per request. A batch the
//! database cannot take is written again until it can.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::crypto::id_mask::IdMask;
use crate::domain::audit::AuditEvent;
use crate::domain::email::mask;
use crate::domain::keys::TenantId;
use crate::domain::Millis;
use crate::storage::Store;

/// Who made a request: for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub client_ip: String,
    pub request_id: String,
}

enum Msg {
    Event(AuditEvent),
    Flush(oneshot::Sender<()>),
}

/// The queue into the audit writer. Cloning shares it.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Msg>,
}

/// A place in the audit queue, taken before a request does its work.
pub struct AuditSlot(mpsc::OwnedPermit<Msg>);

/// Events that may wait for the writer.
const QUEUE: usize = 16 * 1024;
const BATCH: usize = 512;
/// How long the first event of a batch waits for others.
const GATHER: Duration = Duration::from_millis(20);

impl Audit {
    /// Start the writer task on the current runtime.
    pub fn start(store: Arc<dyn Store>) -> Audit {
        Self::with_queue(store, QUEUE)
    }

    fn with_queue(store: Arc<dyn Store>, queue: usize) -> Audit {
        let (tx, rx) = mpsc::channel(queue);
        tokio::spawn(writer(store, rx));
        Audit { tx }
    }

    /// A place for one event. `Unavailable` (503) when the queue is full: the writer is
    /// that far behind because the database cannot take its batches.
    pub fn slot(&self) -> Result<AuditSlot, crate::service::ServiceError> {
        self.tx
            .clone()
            .try_reserve_owned()
            .map(AuditSlot)
            .map_err(|_| {
                crate::service::ServiceError::Unavailable("the audit queue is full".into())
            })
    }

    /// Write everything queued so far.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

impl AuditSlot {
    /// Queue one event; the recipient is masked here, before it goes anywhere.
    pub fn record(
        self,
        tenant: &TenantId,
        at: Millis,
        event: &str,
        recipient: &str,
        outcome: &str,
        ctx: &RequestContext,
    ) {
        self.0.send(Msg::Event(AuditEvent {
            id: 0,
            tenant_id: tenant.as_str().to_string(),
            at,
            event: event.to_string(),
            recipient: if recipient.is_empty() {
                String::new()
            } else {
                mask(recipient)
            },
            outcome: outcome.to_string(),
            client_ip: ctx.client_ip.clone(),
            request_id: ctx.request_id.clone(),
        }));
    }
}

async fn writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        // Let a batch gather for a moment, then take what is queued: one wake-up of this
        // task per batch, not one per event (each was a thread switch on a busy server).
        if !matches!(first, Msg::Flush(_)) {
            tokio::time::sleep(GATHER).await;
        }
        let mut next = Some(first);
        while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
            match msg {
                Msg::Event(e) => {
                    batch.push(e);
                    if batch.len() >= BATCH {
                        write(&store, &mut batch).await;
                    }
                }
                // Everything queued before a flush is in `batch`: write it and answer.
                Msg::Flush(w) => {
                    waiters.push(w);
                    break;
                }
            }
        }
        write(&store, &mut batch).await;
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// Append what is in `batch` (one transaction) and empty it. While the database cannot take
/// it, it is written again (the queue fills meanwhile, and requests are refused with 503
/// instead of losing their events); a failure of another kind is logged and dropped.
async fn write(store: &Arc<dyn Store>, batch: &mut Vec<AuditEvent>) {
    if batch.is_empty() {
        return;
    }
    let events = Arc::new(std::mem::take(batch));
    let mut pause = Duration::from_millis(200);
    let mut again = false;
    loop {
        let (st, ev) = (Arc::clone(store), Arc::clone(&events));
        match tokio::task::spawn_blocking(move || st.append_audit(&ev, again)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) if e.is_unavailable() => {
                tracing::warn!(error = %e, "audit write failed; trying again");
                // Its commit may have happened before the connection went: the next write
                // does not store an event twice.
                again = true;
            }
            Ok(Err(e)) => return tracing::error!(error = %e, "audit write failed"),
            Err(e) => return tracing::error!(error = %e, "audit writer task failed"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Under this many bytes free on the disk of the database's files (where this process sees
/// it: SQLite), the instance is not ready: a code's write needs a few pages, a checkpoint
/// more, and a disk this full fails them soon. Ready again as soon as space is back.
const DISK_FLOOR_BYTES: u64 = 1024 * 1024;

/// Where the disk does not show it (PostgreSQL's server's disk, which this process cannot
/// see; a full disk the free space did not show): how long after a write met a full disk
/// the instance says it is not ready (on SQLite: unless a write that took space committed
/// since): a minute, the period of the purge and statistics writes, which meet the full
/// disk again while it lasts
/// (so an instance that gets no traffic while it is not ready does not flap); once space is
/// back, it is ready again at most this long after.
const DISK_FULL_NOT_READY_MS: i64 = 60_000;

/// Where the disk is this process's to see (SQLite), readiness makes a write that takes
/// space unless one committed within this long: an idle server asked for its readiness
/// every few seconds writes a page at most this often, a busy one never.
const WROTE_LATELY: Duration = Duration::from_secs(5);

/// What an audit page's `before` must be.
pub const BEFORE_RULE: &str = "must be a next_before of this tenant's audit, given back as it came";

/// The label of the key audit ids are shown under (one per tenant).
const AUDIT_ID_LABEL: &str = "audit-id";

/// `n` through `f` where it is a number the permutation takes (not negative); the
/// permutation keeps numbers below 2^63 below it.
fn shown_as(n: i64, f: impl Fn(u64) -> u64) -> i64 {
    u64::try_from(n)
        .ok()
        .and_then(|n| i64::try_from(f(n)).ok())
        .unwrap_or(n)
}

impl crate::service::Core {
    /// A page of the tenant's own events, newest first (events still buffered are written
    /// first, so a caller sees its own latest requests). `limit`: 1–200. Ids, `before`
    /// too, are the tenant's view of them ([`IdMask`]).
    pub async fn audit_page(
        &self,
        tenant: &TenantId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<AuditEvent>, bool), crate::service::ServiceError> {
        if !(1..=200).contains(&limit) {
            return Err(crate::service::ServiceError::field(
                "limit",
                "must be between 1 and 200",
            ));
        }
        // Events still queued are written first — but not waited for longer than the
        // database's own timeout when it is away.
        let wait = Duration::from_secs(self.settings.load().database.timeout_seconds);
        if tokio::time::timeout(wait, self.audit.flush())
            .await
            .is_err()
        {
            return Err(crate::service::ServiceError::Unavailable(
                "the audit queue cannot be written now".into(),
            ));
        }
        // Ids are shown through the tenant's own permutation: their order and gaps would
        // count other tenants' events (the counter is shared).
        let mask = IdMask::new(self.keyring.get().pepper(), AUDIT_ID_LABEL, tenant.as_str());
        let before = before.map(|b| shown_as(b, |b| mask.show(b)));
        // A number that names no event stands for one past the newest (a stale cursor, a
        // typo, another tenant's id): refused, not answered with the first page again.
        if let Some(raw) = before {
            let newest = self.db(|s| s.newest_audit_id()).await?;
            if raw > newest {
                return Err(crate::service::ServiceError::rule("before", BEFORE_RULE));
            }
        }
        let tid = tenant.clone();
        // One more than asked, to tell whether a next page has any (a last page that is
        // exactly full says so, with no cursor to an empty page).
        let mut events = self
            .db(move |s| s.audit_page(&tid, before, limit + 1))
            .await?;
        let more = events.len() > limit as usize;
        events.truncate(limit as usize);
        for e in &mut events {
            e.id = shown_as(e.id, |id| mask.hide(id));
        }
        Ok((events, more))
    }

    /// Ready means writes succeed (a read can answer while the database is locked or full),
    /// within 3 seconds.
    pub async fn ready(&self) -> Result<(), crate::service::ServiceError> {
        if self.keyring.locked_out() {
            return Err(crate::service::ServiceError::Unavailable(
                "the stored keyring was rotated to a master key this instance does not hold: write the active master key to its key file (it is read again), or restart it with that key".into(),
            ));
        }
        let probe = self.db(|s| {
            s.ping()?;
            if s.disk_read_only() {
                return Err(crate::storage::StoreError::Unavailable(
                    "the database's file system is mounted read-only".into(),
                ));
            }
            s.write_probe()?;
            let free = s.disk_free();
            // The disk shows room, but a write met it full or failing lately, or none took
            // for a while (a file system that fails every write and still shows as writable:
            // ext4's emergency read-only state after an error): one that takes space says
            // whether it takes writes (where the disk is this process's to see: SQLite).
            if free.is_some_and(|f| f >= DISK_FLOOR_BYTES)
                && (crate::storage::disk_full_lately(DISK_FULL_NOT_READY_MS)
                    || !s.wrote_within(WROTE_LATELY))
            {
                s.space_probe()?;
            }
            Ok(free)
        });
        // The probe takes no space: a full disk is seen by looking at it where this process
        // can (SQLite's), and by the writes that met it lately (a disk this process cannot
        // see: PostgreSQL's; one whose free space did not show it) — until a write that took
        // space committed since.
        match tokio::time::timeout(Duration::from_secs(3), probe).await {
            Ok(Ok(Some(free))) if free < DISK_FLOOR_BYTES => {
                Err(crate::service::ServiceError::Unavailable(format!(
                    "the database's disk has {free} bytes free (under {DISK_FLOOR_BYTES})"
                )))
            }
            Ok(Ok(_)) if crate::storage::disk_full_lately(DISK_FULL_NOT_READY_MS) => {
                Err(crate::service::ServiceError::Unavailable(
                    "a write met a full, failing or read-only disk within the last minute".into(),
                ))
            }
            Ok(r) => r.map(drop),
            Err(_) => Err(crate::service::ServiceError::Unavailable(
                "no write completed within 3 s".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::storage::sqlite::SqliteStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_requests_and_loses_no_event_while_the_database_is_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, 2).unwrap());
        let tenant = crate::domain::tenant::Tenant::sample();
        store.insert_tenant(&tenant, &[7; 32], 1).unwrap();
        let audit = Audit::with_queue(Arc::clone(&store), 4);
        // The database is held locked: the writer's batches cannot be written.
        let lock = rusqlite::Connection::open(&path).unwrap();
        lock.execute_batch("BEGIN IMMEDIATE").unwrap();
        let ctx = RequestContext::default();
        let mut recorded = 0;
        let mut refused = 0;
        for i in 0..50 {
            match audit.slot() {
                Ok(slot) => {
                    slot.record(&tenant.id, i, "mint", "a@example.com", "sent", &ctx);
                    recorded += 1;
                }
                Err(e) => {
                    assert!(matches!(e, crate::service::ServiceError::Unavailable(_)));
                    refused += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(refused > 0, "the queue never filled");
        lock.execute_batch("ROLLBACK").unwrap();
        audit.flush().await;
        let page = store.audit_page(&tenant.id, None, 200).unwrap();
        assert_eq!(page.len(), recorded, "every accepted event was written");
    }
}
