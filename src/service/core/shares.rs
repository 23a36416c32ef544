//! Per-tenant shares of a bounded kind of work: at most a few places in flight for one
//! tenant, a further one refused at once (not queued), each given back when it is dropped —
//! so that one tenant cannot take a process-wide bound from the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The places each tenant holds of one kind of work; no entry at none.
pub(crate) struct Shares {
    limit: usize,
    taken: Mutex<HashMap<String, usize>>,
}

/// One tenant's place, given back when dropped (a finished piece of work, a client that went
/// away while it waited).
pub(crate) struct Share {
    shares: Arc<Shares>,
    tenant: String,
}

impl Shares {
    /// At most `limit` places per tenant.
    pub(crate) fn new(limit: usize) -> Arc<Shares> {
        Arc::new(Shares {
            limit,
            taken: Mutex::new(HashMap::new()),
        })
    }

    fn locked(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // A count per tenant, consistent after every statement.
        self.taken.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for `tenant`, or `None` when it holds `limit` already.
    pub(crate) fn take(self: &Arc<Self>, tenant: &str) -> Option<Share> {
        let mut m = self.locked();
        let n = m.entry(tenant.to_string()).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Share {
            shares: Arc::clone(self),
            tenant: tenant.to_string(),
        })
    }

    /// The places held now, by tenant.
    #[cfg(test)]
    pub(crate) fn held(&self) -> HashMap<String, usize> {
        self.locked().clone()
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut m = self.shares.locked();
        if let Some(n) = m.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.tenant);
            }
        }
    }
}
