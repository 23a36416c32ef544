//! Template checks in flight: a save's lint and a preview's render. Each is bounded by the
//! engine's fuel, but many at once — from any tenant, under open registration from anyone —
//! would take the CPU from every other request. So at most [`PER_TENANT`] of one tenant's are
//! in flight on this instance (a further one is 503 `overloaded` at once), and across tenants
//! one per two cores runs (at least one), the others waiting for a turn up to [`WAIT`] (then
//! 503 `overloaded`). Turns go round the tenants that wait, one each, not first come first
//! served: a tenant's one check waits behind one of each other waiting tenant's, however many
//! those have queued. Codes' messages are rendered outside this bound: a mint is never kept
//! waiting by another tenant's template work.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::service::core::shares::{Share, Shares};
use crate::service::ServiceError;

/// One tenant's template checks in flight on this instance, at most.
pub(crate) const PER_TENANT: usize = 8;

/// How long a check waits for its turn to run before it is answered `overloaded`.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(crate) struct TemplateWork {
    shares: Arc<Shares>,
    turns: Arc<Turns>,
    wait: Duration,
}

/// A check's place: its tenant's share and its turn on the CPU, given back when dropped
/// (moved into the blocking task, so held until the work itself is over — not only until
/// the client goes away).
pub(crate) struct TemplatePlace {
    _share: Share,
    _turn: Turn,
}

/// The turns to run: how many are free, and who waits for one, by tenant.
struct Turns {
    state: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    /// Turns no one holds. While one is free no one waits.
    free: usize,
    /// The tenants with a check waiting, in the order their next turn comes; a tenant is
    /// here exactly when it has an entry in `queues`.
    order: VecDeque<String>,
    /// Each waiting tenant's checks, first come first.
    queues: HashMap<String, VecDeque<oneshot::Sender<Turn>>>,
}

/// A turn to run, handed on when dropped: to the next waiting tenant's first check, or
/// back to the free ones.
struct Turn {
    /// `None` once it was handed on (a check that had stopped waiting cannot hold it).
    turns: Option<Arc<Turns>>,
}

impl Waiting {
    /// The next waiting check that still waits: the first of the tenant whose turn it is,
    /// that tenant then going to the back.
    fn next(&mut self) -> Option<oneshot::Sender<Turn>> {
        while let Some(tenant) = self.order.pop_front() {
            let Some(queue) = self.queues.get_mut(&tenant) else {
                continue;
            };
            let mut found = None;
            while let Some(tx) = queue.pop_front() {
                if !tx.is_closed() {
                    found = Some(tx);
                    break;
                }
            }
            if queue.is_empty() {
                self.queues.remove(&tenant);
            } else {
                self.order.push_back(tenant);
            }
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

impl Turns {
    fn new(running: usize) -> Arc<Turns> {
        Arc::new(Turns {
            state: Mutex::new(Waiting {
                free: running.max(1),
                ..Waiting::default()
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, Waiting> {
        // Consistent after every statement that changes it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A turn for one of `tenant`'s checks, waiting at most `wait`.
    async fn take(self: &Arc<Self>, tenant: &str, wait: Duration) -> Option<Turn> {
        let rx = {
            let mut s = self.state();
            if s.free > 0 {
                s.free -= 1;
                return Some(Turn {
                    turns: Some(Arc::clone(self)),
                });
            }
            let (tx, rx) = oneshot::channel();
            match s.queues.get_mut(tenant) {
                Some(queue) => {
                    // Checks that stopped waiting leave as another comes.
                    queue.retain(|t| !t.is_closed());
                    queue.push_back(tx);
                }
                None => {
                    s.queues.insert(tenant.to_string(), VecDeque::from([tx]));
                    s.order.push_back(tenant.to_string());
                }
            }
            rx
        };
        // A turn sent as the wait ran out is dropped with the receiver, and so handed on.
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(turn)) => Some(turn),
            _ => None,
        }
    }

    /// Hand a turn that was given back to the next waiting check, or free it.
    fn hand_on(self: &Arc<Self>) {
        loop {
            let Some(tx) = ({
                let mut s = self.state();
                let next = s.next();
                if next.is_none() {
                    s.free += 1;
                }
                next
            }) else {
                return;
            };
            match tx.send(Turn {
                turns: Some(Arc::clone(self)),
            }) {
                Ok(()) => return,
                // It stopped waiting just now: the next one.
                Err(mut turn) => turn.turns = None,
            }
        }
    }

    /// Checks waiting now (those that stopped waiting included, until passed over).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.state().queues.values().map(VecDeque::len).sum()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(turns) = self.turns.take() {
            turns.hand_on();
        }
    }
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
            turns: Turns::new(running),
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
        match self.turns.take(tenant, self.wait).await {
            Some(turn) => Ok(TemplatePlace {
                _share: share,
                _turn: turn,
            }),
            None => {
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

    /// Turns go round the waiting tenants: with tnt_a's checks queued first, tnt_b's one
    /// comes after a single one of tnt_a's, not after all of them; a check that stopped
    /// waiting is passed over, and every turn comes back free.
    #[tokio::test]
    async fn turns_go_round_the_waiting_tenants() {
        let w = TemplateWork::new(8, 1, Duration::from_secs(60));
        let first = w.place("tnt_a").await.expect("a place");
        let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
        let mut releases = HashMap::new();
        let mut queue = |name: &'static str, tenant: &'static str| {
            let (release, released) = oneshot::channel::<()>();
            releases.insert(name, release);
            let (w, got_tx) = (w.clone(), got_tx.clone());
            let before = w.turns.waiting();
            let task = tokio::spawn(async move {
                let place = w.place(tenant).await;
                let _ = got_tx.send(name);
                let _ = released.await;
                drop(place);
            });
            (before, task)
        };
        // Queued in this order, each once the one before waits.
        let mut tasks = Vec::new();
        for (name, tenant) in [
            ("a2", "tnt_a"),
            ("a3", "tnt_a"),
            ("gone", "tnt_c"),
            ("a4", "tnt_a"),
            ("b1", "tnt_b"),
        ] {
            let (before, task) = queue(name, tenant);
            while w.turns.waiting() == before {
                tokio::task::yield_now().await;
            }
            tasks.push((name, task));
        }
        // tnt_c's check stops waiting (its client went away).
        let (_, gone) = tasks.remove(2);
        gone.abort();
        let _ = gone.await;
        let mut order = Vec::new();
        drop(first);
        while let Some(name) = got.recv().await {
            order.push(name);
            releases
                .remove(name)
                .expect("a waiting check")
                .send(())
                .expect("it holds its turn");
            if order.len() == 4 {
                break;
            }
        }
        assert_eq!(order, ["a2", "b1", "a3", "a4"]);
        for (_, t) in tasks {
            t.await.expect("a check");
        }
        assert!(w.shares.held().is_empty(), "{:?}", w.shares.held());
        let s = w.turns.state();
        assert_eq!((s.free, s.order.len(), s.queues.len()), (1, 0, 0));
    }
}
