//! The verifies of a key under way in this process, so that one that finds no attempt left
//! can wait for them before it says why.
//!
//! The store's attempt reservation bounds evaluations under any concurrency. But a verify
//! that finds every attempt reserved while other verifies of the key are still comparing
//! cannot yet tell `attempts_exhausted` from `otp_used`: the right code sent several times
//! at once would be told `attempts_exhausted` though no wrong guess was made. It waits for
//! them here, then reads the key's state. Verifies do not wait for each other otherwise
//! (those of a key that come while one waits here queue behind it, briefly), so the
//! hashing pool still sheds a flood. Other instances' verifies are not seen here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

type Turn = Arc<RwLock<()>>;

/// The keys being verified now, each with how many verifies of it are under way.
#[derive(Default)]
pub(crate) struct KeyTurns {
    keys: Mutex<HashMap<Vec<u8>, (usize, Turn)>>,
}

/// One verify of a key, under way; the key leaves the table with its last verify (also
/// when a verify is dropped while it waits).
pub(crate) struct Under<'a> {
    turns: &'a KeyTurns,
    key: Vec<u8>,
    turn: Turn,
    guard: Option<OwnedRwLockReadGuard<()>>,
    /// Held instead of `guard` by a turn taken [`KeyTurns::alone`].
    alone: Option<OwnedRwLockWriteGuard<()>>,
}

impl KeyTurns {
    fn keys(&self) -> MutexGuard<'_, HashMap<Vec<u8>, (usize, Turn)>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A turn of `key`, counted before any wait (one dropped while it waits still leaves the
    /// table); it holds nothing yet.
    fn join(&self, key: &[u8]) -> Under<'_> {
        let turn = {
            let mut keys = self.keys();
            let (count, turn) = keys.entry(key.to_vec()).or_default();
            *count += 1;
            Arc::clone(turn)
        };
        Under {
            turns: self,
            key: key.to_vec(),
            turn,
            guard: None,
            alone: None,
        }
    }

    /// A verify of `key` (the shareable key's digest) starts; before its reservation.
    pub(crate) async fn enter(&self, key: &[u8]) -> Under<'_> {
        let mut under = self.join(key);
        under.guard = Some(Arc::clone(&under.turn).read_owned().await);
        under
    }

    /// A turn of `key` that nothing else of the key runs beside: it waits for those under
    /// way, and those that come wait for it (a hosted page's sends, one at a time).
    pub(crate) async fn alone(&self, key: &[u8]) -> Under<'_> {
        let mut under = self.join(key);
        under.alone = Some(Arc::clone(&under.turn).write_owned().await);
        under
    }

    /// Wait until the verifies of `key` under way in this process have finished (at once
    /// when there are none).
    pub(crate) async fn wait_for(&self, key: &[u8]) {
        if self.keys().contains_key(key) {
            self.enter(key).await.settle().await;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys().len()
    }
}

impl Under<'_> {
    /// Wait until the key's other verifies in this process have finished (this one holds no
    /// reservation).
    pub(crate) async fn settle(&mut self) {
        drop(self.guard.take());
        drop(Arc::clone(&self.turn).write_owned().await);
    }
}

impl Drop for Under<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        drop(self.alone.take());
        let mut keys = self.turns.keys();
        if let Some((count, _)) = keys.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                keys.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_run_side_by_side_and_settling_waits_for_the_others() {
        let turns = Arc::new(KeyTurns::default());
        let first = turns.enter(b"k").await;
        // A second verify of the key is not held up by the first.
        let second = turns.enter(b"k").await;
        let other_key = turns.enter(b"other").await;
        let t = Arc::clone(&turns);
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let settler = tokio::spawn(async move {
            let mut third = t.enter(b"k").await;
            third.settle().await;
            let _ = tx.send(());
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err(), "it waits for both others");
        drop(first);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(rx.try_recv().is_err(), "it waits for the second too");
        drop(second);
        settler.await.unwrap();
        assert!(rx.await.is_ok());
        assert_eq!(turns.len(), 1, "only the other key is left");
        drop(other_key);
        assert_eq!(turns.len(), 0);
    }

    #[tokio::test]
    async fn a_turn_alone_runs_beside_nothing_of_its_key() {
        let turns = Arc::new(KeyTurns::default());
        let first = turns.alone(b"s").await;
        let other_key = turns.alone(b"t").await;
        let t = Arc::clone(&turns);
        let second = tokio::spawn(async move {
            let _second = t.alone(b"s").await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "it waits for the first");
        drop(first);
        second.await.unwrap();
        drop(other_key);
        assert_eq!(turns.len(), 0);
        // Waiting for a key with nothing under way returns at once.
        turns.wait_for(b"s").await;
        assert_eq!(turns.len(), 0);
    }

    #[tokio::test]
    async fn a_verify_dropped_while_it_waits_leaves_the_table() {
        let turns = Arc::new(KeyTurns::default());
        let first = turns.enter(b"k").await;
        let t = Arc::clone(&turns);
        // A settle waits for the first; a verify that comes meanwhile queues behind it.
        let settler = tokio::spawn(async move {
            let mut u = t.enter(b"k").await;
            u.settle().await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let t = Arc::clone(&turns);
        let late = tokio::spawn(async move {
            let _u = t.enter(b"k").await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!late.is_finished(), "it waits behind the settle");
        late.abort();
        let _ = late.await;
        drop(first);
        settler.await.unwrap();
        assert_eq!(turns.len(), 0, "no verify of the key is left");
    }
}
