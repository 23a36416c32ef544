//! The verifies of a key under way in this process, so that one that finds no attempt left
//! can wait for them before it says why.
//!
//! The store's attempt reservation bounds evaluations under any concurrency. But a verify
//! that finds every attempt reserved while other verifies of the key are still comparing
//! cannot yet tell `attempts_exhausted` from `otp_used`: the right code sent several times
//! at once would be told `attempts_exhausted` though no wrong guess was made. It waits for
//! them here, then reads the key's state. Verifies never wait for each other otherwise, so
//! the hashing pool still sheds a flood.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedRwLockReadGuard, RwLock};

type Turn = Arc<RwLock<()>>;

/// The keys being verified now.
#[derive(Default)]
pub(crate) struct KeyTurns {
    keys: Mutex<HashMap<Vec<u8>, Turn>>,
}

/// One verify of a key, under way; the key leaves the table with its last verify.
pub(crate) struct Under<'a> {
    turns: &'a KeyTurns,
    key: Vec<u8>,
    turn: Turn,
    guard: Option<OwnedRwLockReadGuard<()>>,
}

impl KeyTurns {
    /// A verify of `key` (the shareable key's digest) starts; before its reservation.
    pub(crate) async fn enter(&self, key: &[u8]) -> Under<'_> {
        let turn = Arc::clone(
            self.keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key.to_vec())
                .or_default(),
        );
        let guard = Arc::clone(&turn).read_owned().await;
        Under {
            turns: self,
            key: key.to_vec(),
            turn,
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
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
        let mut keys = self
            .turns
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The table's handle and this one: no other verify of the key (handles are cloned
        // only under this lock).
        if Arc::strong_count(&self.turn) == 2 {
            keys.remove(&self.key);
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
}
