//! The group-commit writer: one thread, one connection, every queued write of a batch in one
//! durable transaction (each in its own savepoint); a panicking write fails only its batch.

use std::path::Path;
use std::time::Duration;

use super::CachedSql;
use crate::storage::StoreError;

/// One write of the hot paths: `run` executes inside the batch's transaction and returns
/// what to do once the batch committed (or failed); `fail` answers when it never ran.
/// Called once the batch committed (`None`) or failed (`Some(error)`).
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
        BatchError {
            unavailable: true,
            message: "the batch transaction was aborted".into(),
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

struct Job {
    run: Box<dyn FnOnce(&rusqlite::Connection) -> Finish + Send>,
    fail: Box<dyn FnOnce(BatchError) + Send>,
}

/// Group commit: one thread owns a connection and commits every queued write in one
/// durable transaction (`synchronous = FULL`), each write in its own savepoint. Callers wait
/// for the commit, so durability is unchanged; under concurrency many writes share one
/// fsync instead of paying one each.
pub(super) struct Writer {
    tx: std::sync::mpsc::SyncSender<Job>,
}

const BATCH_MAX: usize = 256;
/// Writes allowed to wait for the writer; beyond this a write is refused as unavailable
/// (503) instead of queueing without bound.
const QUEUE_MAX: usize = 8192;

impl Writer {
    pub(super) fn start(path: &Path) -> Result<Writer, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(super::STATEMENT_CACHE);
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE_MAX);
        std::thread::Builder::new()
            .name("otpmint-db-writer".into())
            .spawn(move || {
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
                            (j.fail)(e.clone());
                        }
                        continue;
                    }
                    let mut panicked = false;
                    let mut done = Vec::with_capacity(jobs.len());
                    for j in jobs {
                        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            (j.run)(&conn)
                        })) {
                            Ok(d) => done.push(d),
                            Err(_) => panicked = true,
                        }
                    }
                    // A panicked job or a transaction SQLite rolled back by itself (I/O error,
                    // disk full) fails the whole batch: nothing of it is committed.
                    let outcome = if panicked || conn.is_autocommit() {
                        let _ = conn.execute_batch("ROLLBACK");
                        Some(BatchError::aborted())
                    } else {
                        conn.execute_batch("COMMIT").err().map(|e| {
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
        Ok(Writer { tx })
    }

    /// Run `f` in the next batch and wait until that batch is durably committed.
    pub(super) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (rtx, rrx) = std::sync::mpsc::sync_channel::<Result<T, StoreError>>(1);
        let fail_tx = rtx.clone();
        let job = Job {
            run: Box::new(move |c| {
                let out = (|| {
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
                })();
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
        self.tx.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => {
                StoreError::Unavailable("the database writer is busy".into())
            }
            std::sync::mpsc::TrySendError::Disconnected(_) => {
                StoreError::Unavailable("the database writer stopped".into())
            }
        })?;
        rrx.recv()
            .map_err(|_| StoreError::Unavailable("the database writer dropped a write".into()))?
    }
}
