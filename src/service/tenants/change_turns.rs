//! How changes of one tenant take turns: one at a time in this process, and — against
//! changes from other instances, which the row version catches — made again after a short
//! random pause.

/// How many times a tenant change is made again on a tenant that changed under it.
pub(super) const CHANGE_TRIES: u32 = 12;

/// Turns for tenant changes in this process: a change of a tenant waits for the one before
/// it (striped by tenant id, so the memory is fixed), so concurrent PATCHes on one instance
/// never collide; the row version still catches changes from other instances.
pub struct ChangeTurns([tokio::sync::Mutex<()>; 64]);

impl Default for ChangeTurns {
    fn default() -> Self {
        ChangeTurns(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl ChangeTurns {
    pub(super) async fn turn(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        let stripe = (h.finish() % self.0.len() as u64) as usize;
        self.0[stripe].lock().await
    }
}

/// Before try `n` of a change (from 1): a random pause growing with `n` (up to 5·n ms), so
/// changes of several instances racing on one tenant fall out of step instead of colliding
/// again at once.
pub(super) async fn before_try(n: u32) {
    if n > 0 {
        use rand::Rng;
        let ms = rand::thread_rng().gen_range(1..=5 * u64::from(n));
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}
