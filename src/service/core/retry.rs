//! Writes that record a fact the database must not lose (a relay's answer, an idempotent
//! answer already given, the undoing of a write answered 503): made now, and if the
//! database cannot take them, kept in one queue in memory and made by one task, oldest
//! first, with growing pauses while the database stays away. However many facts an outage
//! leaves behind, one write at a time tries the database: a database coming back meets one
//! caller, not one per fact (each of which would hold a blocking thread and a connection).
//! A fact the database still cannot take goes to the back of the queue, so one that waits
//! on something of its own (a row another session holds) does not hold the others.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::service::{Core, ServiceError};
use crate::storage::{Store, StoreError};

/// The first pause before trying again, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

type Write = Arc<dyn Fn(&dyn Store) -> Result<(), StoreError> + Send + Sync>;

/// A fact the database could not take yet.
struct Waiting {
    what: &'static str,
    write: Write,
    taken: Box<dyn FnOnce() + Send>,
}

/// The facts waiting for the database, oldest first, and whether a task is writing them.
#[derive(Default)]
pub(crate) struct Backlog {
    state: Mutex<(VecDeque<Waiting>, bool)>,
}

impl Backlog {
    /// How many facts wait for the database (the metrics' gauge).
    pub(crate) fn len(&self) -> usize {
        self.state.lock().map(|s| s.0.len()).unwrap_or(0)
    }

    /// Queue a fact; true if no task is writing the queue (the caller starts one).
    fn push(&self, fact: Waiting) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        state.0.push_back(fact);
        !std::mem::replace(&mut state.1, true)
    }

    /// The oldest fact, or none, and then the writer's turn ends under the same lock (a
    /// fact pushed after this sees no writer and starts one).
    fn next(&self) -> Option<Waiting> {
        let mut state = self.state.lock().ok()?;
        let next = state.0.pop_front();
        if next.is_none() {
            state.1 = false;
        }
        next
    }

    /// Put a fact the database could not take at the back of the queue.
    fn again_later(&self, fact: Waiting) {
        if let Ok(mut state) = self.state.lock() {
            state.0.push_back(fact);
        }
    }
}

impl Core {
    /// Make `f` (a write that may be repeated: it changes nothing once it took effect) until
    /// the store takes it. While the database is unavailable it waits in the backlog,
    /// however long that lasts; a failure of any other kind (a bug, damage) is logged and
    /// dropped. `taken` runs once the write is durable (not if it is dropped). Returns
    /// whether it was taken at once.
    pub(crate) async fn record_until_taken<F>(
        &self,
        what: &'static str,
        f: F,
        taken: impl FnOnce() + Send + 'static,
    ) -> bool
    where
        F: Fn(&dyn Store) -> Result<(), StoreError> + Send + Sync + 'static,
    {
        let write: Write = Arc::new(f);
        let first = Arc::clone(&write);
        match self.write(move |s| first(s)).await {
            Ok(()) => {
                taken();
                return true;
            }
            Err(ServiceError::Unavailable(e)) => {
                tracing::warn!(error = %e, what, "the database cannot record this now; trying again in the background");
            }
            Err(e) => {
                tracing::error!(error = %e, what, "recording failed");
                return false;
            }
        }
        let fact = Waiting {
            what,
            write,
            taken: Box::new(taken),
        };
        if self.backlog.push(fact) {
            tokio::spawn(self.clone().write_backlog());
        }
        false
    }

    /// Write the backlog, one fact at a time, oldest first, pausing longer each time the
    /// database cannot take one; ends when the backlog is empty.
    async fn write_backlog(self) {
        let mut pause = FIRST_PAUSE;
        tokio::time::sleep(pause).await;
        while let Some(fact) = self.backlog.next() {
            let write = Arc::clone(&fact.write);
            match self.write(move |s| write(s)).await {
                Ok(()) => {
                    tracing::info!(what = fact.what, "recorded after the database came back");
                    (fact.taken)();
                    pause = FIRST_PAUSE;
                }
                Err(ServiceError::Unavailable(_)) => {
                    self.backlog.again_later(fact);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LONGEST_PAUSE);
                }
                Err(e) => {
                    tracing::error!(error = %e, what = fact.what, "recording failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(what: &'static str) -> Waiting {
        Waiting {
            what,
            write: Arc::new(|_| Ok(())),
            taken: Box::new(|| {}),
        }
    }

    #[test]
    fn one_writer_takes_the_backlog_oldest_first_and_the_next_fact_after_it_ends_starts_another() {
        let b = Backlog::default();
        assert!(b.push(fact("a")), "the first fact starts a writer");
        assert!(!b.push(fact("b")), "a writer is running: no second one");
        assert_eq!(b.len(), 2);
        let a = b.next().map(|f| f.what);
        assert_eq!(a, Some("a"));
        b.again_later(fact("a"));
        assert_eq!(
            b.next().map(|f| f.what),
            Some("b"),
            "a fact the database did not take waits behind b"
        );
        assert_eq!(b.next().map(|f| f.what), Some("a"));
        assert!(b.next().is_none(), "empty: the writer's turn ends");
        assert!(b.push(fact("c")), "a fact after that starts a new writer");
    }
}
