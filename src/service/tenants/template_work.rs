//! Template checks in flight: a save's lint and a preview's render. Each is bounded by the
//! engine's fuel, but many at once — from any tenant, under open registration from anyone —
//! would take the CPU from every other request. So at most [`PER_TENANT`] of one tenant's are
//! in flight on this instance (a further one is 503 `overloaded` at once), and across tenants
//! one per two cores runs (at least one), the others waiting for a turn up to [`WAIT`] (then
//! 503 `overloaded`). Codes' messages are rendered outside this bound: a mint is never kept
//! waiting by another tenant's template work.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::service::core::shares::{Share, Shares};
use crate::service::ServiceError;

/// One tenant's template checks in flight on this instance, at most.
pub(crate) const PER_TENANT: usize = 8;

/// How long a check waits for its turn to run before it is answered `overloaded`.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(crate) struct TemplateWork {
    shares: Arc<Shares>,
    running: Arc<Semaphore>,
    wait: Duration,
}

/// A check's place: its tenant's share and its turn on the CPU, given back when dropped
/// (moved into the blocking task, so held until the work itself is over — not only until
/// the client goes away).
pub(crate) struct TemplatePlace {
    _share: Share,
    _running: OwnedSemaphorePermit,
}

impl Default for TemplateWork {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        TemplateWork::new(PER_TENANT, (cores / 2).max(1), WAIT)
    }
}

impl TemplateWork {
    pub(crate) fn new(per_tenant: usize, running: usize, wait: Duration) -> TemplateWork {
        TemplateWork {
            shares: Shares::new(per_tenant),
            running: Arc::new(Semaphore::new(running.max(1))),
            wait,
        }
    }

    /// A place for one of `tenant`'s checks, or `Overloaded`: its share full (at once), or
    /// no turn free within the wait.
    pub(crate) async fn place(&self, tenant: &str) -> Result<TemplatePlace, ServiceError> {
        let Some(share) = self.shares.take(tenant) else {
            // Debug only: each refusal is a request of its own, logged with its 503 (a warning
            // per refusal would let one tenant's loop swell the logs).
            tracing::debug!(tenant_id = %tenant, "template checks: the tenant's share of this instance is in flight already");
            return Err(ServiceError::Overloaded);
        };
        let turn = Arc::clone(&self.running).acquire_owned();
        match tokio::time::timeout(self.wait, turn).await {
            Ok(Ok(running)) => Ok(TemplatePlace {
                _share: share,
                _running: running,
            }),
            _ => {
                tracing::debug!(tenant_id = %tenant, "template checks: no turn came free in time");
                Err(ServiceError::Overloaded)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tenant's checks beyond its share are refused at once, another tenant's are not;
    /// beyond the running bound a check waits for a turn, gets one given back, and is
    /// refused when none comes in time; every place is given back.
    #[tokio::test]
    async fn a_tenants_share_and_the_running_bound_hold_and_are_given_back() {
        // A turn that never comes free in time: refused, its share given back.
        let short = TemplateWork::new(2, 1, Duration::from_millis(200));
        let only = short.place("tnt_a").await.expect("a place");
        assert!(matches!(
            short.place("tnt_a").await,
            Err(ServiceError::Overloaded)
        ));
        assert_eq!(short.shares.held().get("tnt_a"), Some(&1));
        drop(only);
        assert!(short.shares.held().is_empty());

        let w = TemplateWork::new(2, 1, Duration::from_secs(60));
        let first = w.place("tnt_a").await.expect("a place");
        // A second of tnt_a's waits for the first's turn, and gets it once that is dropped.
        let w2 = w.clone();
        let second = tokio::spawn(async move { w2.place("tnt_a").await.is_ok() });
        while w.shares.held().get("tnt_a") != Some(&2) {
            tokio::task::yield_now().await;
        }
        // tnt_a holds its two: a third is refused at once, not after the wait.
        let asked = std::time::Instant::now();
        assert!(matches!(
            w.place("tnt_a").await,
            Err(ServiceError::Overloaded)
        ));
        assert!(asked.elapsed() < Duration::from_secs(1), "refused at once");
        drop(first);
        assert!(second.await.expect("the waiting check"));
        let b = w.place("tnt_b").await.expect("tnt_b's place");
        drop(b);
        assert!(w.shares.held().is_empty(), "{:?}", w.shares.held());
    }
}
