//! The process-wide bound on outbound work (`delivery.max_sessions`, API.md §19.3), shared
//! fairly between tenants: a place that comes free goes to the waiting tenant holding the
//! fewest places, not to whoever asked first. A first-come queue let one tenant whose relay
//! is slow or hangs queue more waiters than the bound has places, and every place it gave
//! back went to its own next waiter — another tenant's sync mint then failed
//! `no_session_free` and its queued mail waited a minute (found by the noisy-neighbour
//! audit). Held places are never taken away: a tenant that holds many gives them up as its
//! sends end, and each one given up goes to the tenant with the fewest.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The bound and who holds and waits for its places.
pub(crate) struct Sessions {
    state: Mutex<State>,
    size: usize,
}

#[derive(Default)]
struct State {
    free: usize,
    /// Places held, by tenant (no entry: none).
    held: HashMap<String, usize>,
    /// Waiters, by tenant, oldest first, each with its arrival number.
    waiting: HashMap<String, VecDeque<(u64, oneshot::Sender<Place>)>>,
    arrivals: u64,
}

/// One place in the bound, given back when dropped.
pub(crate) struct Place {
    sessions: Arc<Sessions>,
    tenant: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.sessions.give_back(&self.tenant);
    }
}

impl Sessions {
    pub(crate) fn new(size: usize) -> Arc<Sessions> {
        let size = size.max(1);
        Arc::new(Sessions {
            state: Mutex::new(State {
                free: size,
                ..State::default()
            }),
            size,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Counts and queues, consistent after every statement.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Places held now, all tenants together.
    pub(crate) fn in_use(&self) -> usize {
        self.size - self.lock().free
    }

    /// A place for `tenant`: at once if one is free, else when one comes free and no tenant
    /// holding fewer waits for it. Dropping the future gives up the wait (a place handed
    /// over meanwhile goes on to the next waiter).
    pub(crate) async fn place(self: &Arc<Self>, tenant: &str) -> Place {
        let rx = {
            let mut s = self.lock();
            if s.free > 0 {
                s.free -= 1;
                *s.held.entry(tenant.to_string()).or_default() += 1;
                return Place {
                    sessions: Arc::clone(self),
                    tenant: tenant.to_string(),
                };
            }
            let (tx, rx) = oneshot::channel();
            s.arrivals += 1;
            let n = s.arrivals;
            let q = s.waiting.entry(tenant.to_string()).or_default();
            // This tenant's latest waiters that gave up (sync sends past their deadline) go
            // now, not only when a place comes free (the others, from the front, then).
            while q.back().is_some_and(|(_, tx)| tx.is_closed()) {
                q.pop_back();
            }
            q.push_back((n, tx));
            rx
        };
        match rx.await {
            Ok(place) => place,
            // The bound is never dropped while anyone waits on it (it lives as long as the
            // outbox): a wait without an answer waits on.
            Err(_) => std::future::pending().await,
        }
    }

    /// `tenant` gives a place back: to the waiting tenant holding the fewest (the longest
    /// waiting of those first), else to the free ones.
    fn give_back(self: &Arc<Self>, tenant: &str) {
        let mut place = None;
        {
            let mut s = self.lock();
            if let Some(n) = s.held.get_mut(tenant) {
                *n -= 1;
                if *n == 0 {
                    s.held.remove(tenant);
                }
            }
            loop {
                let Some(next) = s.next_waiter() else {
                    s.free += 1;
                    break;
                };
                let Some((_, tx)) = s.waiting.get_mut(&next).and_then(VecDeque::pop_front) else {
                    continue;
                };
                if s.waiting.get(&next).is_some_and(VecDeque::is_empty) {
                    s.waiting.remove(&next);
                }
                if tx.is_closed() {
                    continue;
                }
                *s.held.entry(next.clone()).or_default() += 1;
                place = Some((
                    tx,
                    Place {
                        sessions: Arc::clone(self),
                        tenant: next,
                    },
                ));
                break;
            }
        }
        // Sent with the lock let go: a waiter gone between the look and the send drops the
        // place, which gives it back again (to the next one).
        if let Some((tx, place)) = place {
            let _ = tx.send(place);
        }
    }
}

impl State {
    /// The tenant whose waiter gets the next place: the fewest held, then the longest
    /// waiting. Waiters that gave up are let go from the front of each queue as it is
    /// looked at (amortised: each is let go once).
    fn next_waiter(&mut self) -> Option<String> {
        self.waiting.retain(|_, q| {
            while q.front().is_some_and(|(_, tx)| tx.is_closed()) {
                q.pop_front();
            }
            !q.is_empty()
        });
        let mut best: Option<(usize, u64, &String)> = None;
        for (t, q) in &self.waiting {
            if let Some((n, _)) = q.front() {
                let key = (self.held.get(t).copied().unwrap_or(0), *n, t);
                if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
                    best = Some(key);
                }
            }
        }
        best.map(|(_, _, t)| t.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn soon<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::time::timeout(Duration::from_millis(200), f)
            .await
            .ok()
    }

    /// A place given back goes to the waiting tenant that holds the fewest, though another
    /// tenant's waiters came first; among one tenant's waiters, the first.
    #[tokio::test]
    async fn a_place_given_back_goes_to_the_tenant_holding_fewest() {
        let s = Sessions::new(2);
        let a1 = s.place("a").await;
        let a2 = s.place("a").await;
        assert_eq!(s.in_use(), 2);
        let s2 = Arc::clone(&s);
        let a3 = tokio::spawn(async move { s2.place("a").await });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let s3 = Arc::clone(&s);
        let b1 = tokio::spawn(async move { s3.place("b").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a1);
        let b1 = soon(b1).await.expect("b, holding none, has it").unwrap();
        assert_eq!(b1.tenant, "b");
        assert!(!a3.is_finished(), "a's waiter waits on");
        drop(a2);
        let a3 = soon(a3).await.expect("then a").unwrap();
        assert_eq!(s.in_use(), 2);
        drop((a3, b1));
        assert_eq!(s.in_use(), 0);
    }

    /// Waiters that gave up are let go as the next one of their tenant queues up, and as
    /// the queues are looked at: none piles up while every place stays held.
    #[tokio::test]
    async fn waiters_that_gave_up_do_not_pile_up() {
        let s = Sessions::new(1);
        let held = s.place("a").await;
        for _ in 0..5 {
            assert!(soon(s.place("b")).await.is_none());
        }
        let s2 = Arc::clone(&s);
        let last = tokio::spawn(async move { s2.place("b").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(s.lock().waiting.get("b").map(VecDeque::len), Some(1));
        drop(held);
        let last = soon(last).await.expect("the live waiter has it").unwrap();
        assert_eq!(last.tenant, "b");
        drop(last);
        assert!(s.lock().waiting.is_empty());
        assert_eq!(s.in_use(), 0);
    }

    /// A waiter that gave up takes nothing: the place goes to the next, or back to the free
    /// ones; nothing is lost either way.
    #[tokio::test]
    async fn a_wait_given_up_loses_no_place() {
        let s = Sessions::new(1);
        let held = s.place("a").await;
        assert!(soon(s.place("b")).await.is_none(), "b gave up");
        let s2 = Arc::clone(&s);
        let c = tokio::spawn(async move { s2.place("c").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        let c = soon(c).await.expect("c has it").unwrap();
        drop(c);
        assert_eq!(s.in_use(), 0);
        let again = soon(s.place("d")).await.expect("free again");
        drop(again);
        assert_eq!(s.in_use(), 0);
    }
}
