//! The group-commit writer: one thread, one connection, every queued write of a batch in one
//! durable transaction (each in its own savepoint); a panicking write fails only its batch.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::CachedSql;
use crate::storage::{StoreError, WriteCall};

/// Writers of this process, told apart so that a call on one writer's thread only joins
/// that writer's batch.
static NEXT_WRITER: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// On a writer's thread while it runs a batch: that writer's id and connection, so a
    /// store call it runs (a [`WriteCall`]) writes into the open batch instead of queueing
    /// behind it.
    static BATCH: RefCell<Option<(u64, Rc<rusqlite::Connection>)>> = const { RefCell::new(None) };
}

/// The open batch's connection while this guard lives (cleared even if a job panics).
struct InBatch;

impl InBatch {
    fn enter(id: u64, conn: &Rc<rusqlite::Connection>) -> InBatch {
        BATCH.with(|b| *b.borrow_mut() = Some((id, Rc::clone(conn))));
        InBatch
    }
}

impl Drop for InBatch {
    fn drop(&mut self) {
        BATCH.with(|b| *b.borrow_mut() = None);
    }
}

/// The connection of `writer`'s open batch, when called on that writer's thread.
fn batch_of(writer: u64) -> Option<Rc<rusqlite::Connection>> {
    BATCH.with(|b| {
        b.borrow()
            .as_ref()
            .filter(|(id, _)| *id == writer)
            .map(|(_, c)| Rc::clone(c))
    })
}

/// Run one write in its own savepoint of the open batch: all of it or none of it.
fn in_savepoint<T>(
    c: &rusqlite::Connection,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // If SQLite already rolled the batch back, run nothing in autocommit mode.
    if c.is_autocommit() {
        return Err(BatchError::aborted().into_store());
    }
    c.execute_cached("SAVEPOINT job", [])?;
    let r = f(c);
    match &r {
        Ok(_) => c.execute_cached("RELEASE job", []).map(drop)?,
        Err(_) => c.execute_batch("ROLLBACK TO job; RELEASE job")?,
    }
    r
}

/// What a job does once its batch committed (`None`) or failed (`Some(error)`).
type Finish = Box<dyn FnOnce(Option<BatchError>) + Send>;

/// Why a batch did not commit, in a form every caller of the batch can get a copy of.
#[derive(Debug, Clone)]
struct BatchError {
    unavailable: bool,
    message: String,
}

impl BatchError {
    fn of(e: rusqlite::Error) -> BatchError {
        let e = StoreError::from(e);
        BatchError {
            unavailable: e.is_unavailable(),
            message: e.to_string(),
        }
    }
    fn aborted() -> BatchError {
        BatchError::unavailable("the batch transaction was aborted")
    }
    fn unavailable(message: &str) -> BatchError {
        BatchError {
            unavailable: true,
            message: message.into(),
        }
    }
    fn into_store(self) -> StoreError {
        if self.unavailable {
            StoreError::Unavailable(self.message)
        } else {
            StoreError::Commit(self.message)
        }
    }
}

enum Job {
    /// A write of one of the store's methods, whose caller waits on a channel: `run`
    /// executes inside the batch and returns what to do once the batch committed or failed;
    /// `fail` answers when it never ran.
    Write {
        run: Box<dyn FnOnce(&rusqlite::Connection) -> Finish + Send>,
        fail: Box<dyn FnOnce(BatchError) + Send>,
    },
    /// A store call run on the writer's thread (see [`Writer::submit`]).
    Call(Box<dyn WriteCall>),
}

impl Job {
    fn run(self, c: &rusqlite::Connection) -> Finish {
        match self {
            Job::Write { run, .. } => run(c),
            Job::Call(call) => {
                let finish = call.run();
                Box::new(move |e: Option<BatchError>| {
                    finish(e.map_or(Ok(()), |e| Err(e.into_store())));
                })
            }
        }
    }

    fn fail(self, e: BatchError) {
        match self {
            Job::Write { fail, .. } => fail(e),
            Job::Call(call) => call.fail(e.into_store()),
        }
    }
}

/// Group commit: one thread owns a connection and commits every queued write in one
/// durable transaction (`synchronous = FULL`), each write in its own savepoint. Callers wait
/// for the commit, so durability is unchanged; under concurrency many writes share one
/// fsync instead of paying one each.
pub(super) struct Writer {
    id: u64,
    tx: std::sync::mpsc::SyncSender<Job>,
    /// When a batch that changed rows last committed (an `Instant` since the writer
    /// started, in ms, plus one; 0: never): the disk took a write then.
    took: std::sync::Arc<std::sync::atomic::AtomicU64>,
    started: std::time::Instant,
}

const BATCH_MAX: usize = 256;
/// Writes allowed to wait for the writer; beyond this a write is refused as unavailable
/// (503) instead of queueing without bound.
pub(super) const QUEUE_MAX: usize = 8192;

impl Writer {
    pub(super) fn start(path: &Path) -> Result<Writer, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(super::STATEMENT_CACHE);
        conn.execute_batch(super::PRAGMAS)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE_MAX);
        let id = NEXT_WRITER.fetch_add(1, Ordering::Relaxed);
        let took = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let started = std::time::Instant::now();
        let took_here = std::sync::Arc::clone(&took);
        std::thread::Builder::new()
            .name("otpmint-db-writer".into())
            .spawn(move || {
                let conn = Rc::new(conn);
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < BATCH_MAX {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                        let e = BatchError::of(e);
                        for j in jobs {
                            j.fail(e.clone());
                        }
                        continue;
                    }
                    let mut panicked = false;
                    let changes_before = conn.total_changes();
                    let mut done = Vec::with_capacity(jobs.len());
                    {
                        let _open = InBatch::enter(id, &conn);
                        for j in jobs {
                            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                j.run(&conn)
                            })) {
                                Ok(d) => done.push(d),
                                Err(_) => panicked = true,
                            }
                        }
                    }
                    // A panicked job or a transaction SQLite rolled back by itself (I/O error,
                    // disk full) fails the whole batch: nothing of it is committed.
                    let outcome = if panicked || conn.is_autocommit() {
                        let _ = conn.execute_batch("ROLLBACK");
                        Some(BatchError::aborted())
                    } else {
                        let committed = conn.execute_batch("COMMIT");
                        if committed.is_ok() && conn.total_changes() > changes_before {
                            // Rows written and durable: the disk took them (the readiness
                            // probe's empty batch takes no space, and says nothing of it).
                            crate::storage::error::note_write_took_space();
                            let ms =
                                u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                            took_here.store(ms.saturating_add(1), Ordering::Relaxed);
                        }
                        committed.err().map(|e| {
                            let _ = conn.execute_batch("ROLLBACK");
                            BatchError::of(e)
                        })
                    };
                    for d in done {
                        d(outcome.clone());
                    }
                }
            })
            .map_err(|e| StoreError::Migration(format!("cannot start the database writer: {e}")))?;
        Ok(Writer {
            id,
            tx,
            took,
            started,
        })
    }

    /// Whether a batch that changed rows committed within `within`: the disk took a write.
    pub(super) fn took_within(&self, within: Duration) -> bool {
        let at = self.took.load(Ordering::Relaxed);
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        at > 0 && u128::from(now.saturating_sub(at)) < within.as_millis()
    }

    /// The open batch's connection, when called on this writer's thread while it runs a
    /// batch (by a [`WriteCall`]).
    pub(super) fn batch_conn(&self) -> Option<Rc<rusqlite::Connection>> {
        batch_of(self.id)
    }

    /// Run `f` in the next batch and wait until that batch is durably committed. Called by
    /// a [`WriteCall`] on this writer's own thread, `f` runs in the open batch at once and
    /// its caller is answered only after that batch commits.
    pub(super) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if let Some(conn) = batch_of(self.id) {
            return in_savepoint(&conn, f);
        }
        let (rtx, rrx) = std::sync::mpsc::sync_channel::<Result<T, StoreError>>(1);
        let fail_tx = rtx.clone();
        let job = Job::Write {
            run: Box::new(move |c| {
                let out = in_savepoint(c, f);
                Box::new(move |commit_error: Option<BatchError>| {
                    let _ = rtx.send(match commit_error {
                        None => out,
                        Some(e) => Err(e.into_store()),
                    });
                })
            }),
            fail: Box::new(move |e: BatchError| {
                let _ = fail_tx.send(Err(e.into_store()));
            }),
        };
        self.enqueue(job)?;
        rrx.recv()
            .map_err(|_| StoreError::Unavailable("the database writer dropped a write".into()))?
    }

    /// Run a store call on this writer's thread in its next batch: the writes it makes join
    /// the batch, and it learns the batch's outcome once it is durable. Nobody waits on a
    /// thread meanwhile: what the call reports goes to whoever awaits it.
    pub(super) fn submit(&self, call: Box<dyn WriteCall>) {
        if let Err((e, job)) = self.try_enqueue(Job::Call(call)) {
            job.fail(e);
        }
    }

    fn enqueue(&self, job: Job) -> Result<(), StoreError> {
        self.try_enqueue(job).map_err(|(e, _)| e.into_store())
    }

    fn try_enqueue(&self, job: Job) -> Result<(), (BatchError, Job)> {
        self.tx.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(j) => {
                (BatchError::unavailable("the database writer is busy"), j)
            }
            std::sync::mpsc::TrySendError::Disconnected(j) => {
                (BatchError::unavailable("the database writer stopped"), j)
            }
        })
    }
}
