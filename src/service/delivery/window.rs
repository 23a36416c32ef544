//! Adaptive concurrency per relay (API.md §11.1), as a mail transfer agent adapts its
//! concurrency per destination: a window of sessions that starts at
//! `smtp.initial_connections`, grows while sends wait and the relay keeps accepting, and halves
//! when the relay turns sessions away — never above the tenant's ceiling, never below 1.
//!
//! Growth is TCP's: one more session per accepted message while the window is below its
//! threshold (the threshold starts at the ceiling, so a new relay reaches its demand within a
//! few rounds of messages), then one more per window's worth of accepted messages. A
//! message only counts when the window was full as it started (someone was waiting, or it
//! took the last session): a tenant that sends little keeps a small window. A refusal halves
//! the window and sets the threshold there, once per round: sessions opened before that
//! halving cannot halve it again, so a burst of refusals from one overshoot halves once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One relay's window. Sessions are permits of a FIFO-fair semaphore holding the window's
/// whole sessions: sends get them in the order they queued.
pub struct RelayWindow {
    state: Mutex<State>,
    sessions: Arc<Semaphore>,
}

#[derive(Debug)]
struct State {
    ceiling: u32,
    /// Sessions allowed at once; fractional between whole sessions while it grows slowly.
    size: f64,
    threshold: f64,
    /// Whole sessions the semaphore holds (in use or free): `size`, rounded down, ≥ 1 —
    /// less `owed`.
    granted: u32,
    /// Permits to take out of circulation as they come back (the window shrank while they
    /// were in use).
    owed: u32,
    in_use: u32,
    /// Sends queued for a session (claimed messages and sync mints).
    waiting: u32,
    /// Bumped by every halving: refusals of sessions opened before it do not halve again.
    round: u64,
    last_used: Instant,
}

impl State {
    fn limit(&self) -> u32 {
        (self.size as u32).clamp(1, self.ceiling.max(1))
    }
}

impl RelayWindow {
    pub fn new(initial: u32, ceiling: u32) -> RelayWindow {
        let ceiling = ceiling.max(1);
        let start = initial.clamp(1, ceiling);
        RelayWindow {
            state: Mutex::new(State {
                ceiling,
                size: f64::from(start),
                threshold: f64::from(ceiling),
                granted: start,
                owed: 0,
                in_use: 0,
                waiting: 0,
                round: 0,
                last_used: Instant::now(),
            }),
            sessions: Arc::new(Semaphore::new(start as usize)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few numbers, consistent after every statement: a panic elsewhere
        // while it was held leaves nothing half-done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the semaphore hold the window's current limit (callers hold the state).
    fn settle(&self, s: &mut State) {
        let want = s.limit();
        let have = s.granted - s.owed;
        if want > have {
            let mut add = want - have;
            // Permits owed back are simply not taken out.
            let forgiven = add.min(s.owed);
            s.owed -= forgiven;
            add -= forgiven;
            s.granted += add;
            self.sessions.add_permits(add as usize);
        } else if want < have {
            let remove = have - want;
            let taken = u32::try_from(self.sessions.forget_permits(remove as usize)).unwrap_or(0);
            s.granted -= taken;
            s.owed += remove - taken;
        }
    }

    /// The sessions allowed at once now.
    pub fn limit(&self) -> u32 {
        self.lock().limit()
    }

    /// Sessions a sender may still claim work for: the window less what runs and waits.
    pub fn free(&self) -> u32 {
        let s = self.lock();
        s.limit().saturating_sub(s.in_use + s.waiting)
    }

    /// A new ceiling (the tenant changed its `max_connections`).
    pub fn set_ceiling(&self, ceiling: u32) {
        let mut s = self.lock();
        if s.ceiling == ceiling.max(1) {
            return;
        }
        s.ceiling = ceiling.max(1);
        s.size = s.size.min(f64::from(s.ceiling));
        s.threshold = s.threshold.min(f64::from(s.ceiling));
        self.settle(&mut s);
    }

    /// Queue for a session, at once (so a claim that follows already counts this send).
    pub fn queue(self: &Arc<Self>) -> Ticket {
        let mut s = self.lock();
        s.waiting += 1;
        s.last_used = Instant::now();
        Ticket {
            window: Arc::clone(self),
            queued: true,
        }
    }

    fn idle_since(&self) -> Option<Instant> {
        let s = self.lock();
        (s.in_use == 0 && s.waiting == 0).then_some(s.last_used)
    }
}

/// A send queued for a session of its relay.
pub struct Ticket {
    window: Arc<RelayWindow>,
    queued: bool,
}

impl Ticket {
    /// Whether this is a place in `window`.
    pub fn is_of(&self, window: &Arc<RelayWindow>) -> bool {
        Arc::ptr_eq(&self.window, window)
    }

    /// Wait for a session, first come first served (callers bound the wait with their
    /// delivery deadline; giving up leaves no trace).
    pub async fn session(mut self) -> Slot {
        let sessions = Arc::clone(&self.window.sessions);
        // The semaphore is never closed: a closed one would mean no session ever again.
        let permit = sessions.acquire_owned().await.ok();
        let mut s = self.window.lock();
        s.waiting -= 1;
        s.in_use += 1;
        self.queued = false;
        // The window was full as this send started: it may grow.
        let full = s.in_use + s.waiting >= s.limit();
        Slot {
            window: Arc::clone(&self.window),
            permit,
            global: None,
            round: s.round,
            full,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.queued {
            self.window.lock().waiting -= 1;
        }
    }
}

/// A session of a relay, held while one message is sent.
pub struct Slot {
    window: Arc<RelayWindow>,
    permit: Option<OwnedSemaphorePermit>,
    /// The process-wide bound's place (`delivery.max_sessions`), once taken.
    global: Option<super::sessions::Place>,
    round: u64,
    full: bool,
}

impl Slot {
    /// This session's place in the process-wide bound on outbound work.
    pub(crate) fn with_global(mut self, permit: super::sessions::Place) -> Slot {
        self.global = Some(permit);
        self
    }

    /// The relay accepted a message on this session.
    pub fn accepted(&self) {
        if !self.full {
            return;
        }
        let mut s = self.window.lock();
        let step = if s.size < s.threshold {
            1.0
        } else {
            1.0 / s.size.max(1.0)
        };
        s.size = (s.size + step).min(f64::from(s.ceiling));
        self.window.settle(&mut s);
    }

    /// The relay turned this session away. Halves the window unless a refusal of this round
    /// already did; true when the send is worth trying again on another session at once
    /// (the window was above one session, or is shrinking from an overshoot right now).
    pub fn refused(&self) -> bool {
        let mut s = self.window.lock();
        if s.round != self.round {
            return true;
        }
        let before = s.limit();
        s.size = (s.size / 2.0).floor().max(1.0);
        s.threshold = s.size;
        s.round += 1;
        self.window.settle(&mut s);
        before > 1
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.window.lock();
        s.in_use -= 1;
        s.last_used = Instant::now();
        if let Some(p) = self.permit.take() {
            if s.owed > 0 {
                // The window shrank while this session was open: its permit leaves.
                s.owed -= 1;
                s.granted -= 1;
                p.forget();
            }
        }
    }
}

/// Every relay's window in this process, by tenant (a new relay — the tenant's SMTP settings
/// changed — starts a new window).
#[derive(Default)]
pub struct Windows {
    map: Mutex<HashMap<String, (i64, Arc<RelayWindow>)>>,
}

/// How long a window nobody uses is kept.
const IDLE_KEPT: Duration = Duration::from_secs(600);

impl Windows {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (i64, Arc<RelayWindow>)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The window of a tenant's relay (`version`: its SMTP settings' version).
    pub fn of(&self, tenant: &str, version: i64, initial: u32, ceiling: u32) -> Arc<RelayWindow> {
        let mut map = self.lock();
        if let Some((v, w)) = map.get(tenant) {
            if *v == version {
                w.set_ceiling(ceiling);
                return Arc::clone(w);
            }
        }
        let w = Arc::new(RelayWindow::new(initial, ceiling));
        map.insert(tenant.to_string(), (version, Arc::clone(&w)));
        w
    }

    /// Sessions free per window key (a tenant's id: its primary transport's), for a claim.
    pub fn free(&self) -> HashMap<String, u32> {
        self.lock()
            .iter()
            .map(|(t, (_, w))| (t.clone(), w.free()))
            .collect()
    }

    /// The current window of every relay (for the metrics: no tenant ids).
    pub fn limits(&self) -> Vec<u32> {
        self.lock().values().map(|(_, w)| w.limit()).collect()
    }

    /// Forget windows nobody used for a while (deleted tenants, relays that moved).
    pub fn prune(&self) {
        self.lock().retain(|_, (_, w)| {
            w.idle_since()
                .is_none_or(|since| since.elapsed() < IDLE_KEPT)
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Queue `n` sends at once (as a claim does), then let each take its session.
    async fn hold(w: &Arc<RelayWindow>, n: usize) -> Vec<Slot> {
        let tickets: Vec<Ticket> = (0..n).map(|_| w.queue()).collect();
        let mut v = Vec::new();
        for t in tickets {
            v.push(t.session().await);
        }
        v
    }

    #[tokio::test]
    async fn a_window_grows_by_one_per_accepted_message_while_sends_fill_it() {
        let w = Arc::new(RelayWindow::new(4, 32));
        assert_eq!((w.limit(), w.free()), (4, 4));
        let slots = hold(&w, 4).await;
        assert_eq!(w.free(), 0);
        for s in &slots {
            s.accepted();
        }
        assert_eq!(w.limit(), 8, "slow start: +1 per accepted message");
        drop(slots);
        assert_eq!(w.free(), 8);
    }

    #[tokio::test]
    async fn a_window_that_is_not_full_does_not_grow() {
        let w = Arc::new(RelayWindow::new(4, 32));
        for _ in 0..100 {
            let s = w.queue().session().await;
            s.accepted();
        }
        assert_eq!(w.limit(), 4);
    }

    #[tokio::test]
    async fn a_refusal_halves_the_window_once_per_round_and_growth_then_slows() {
        let w = Arc::new(RelayWindow::new(8, 32));
        let slots = hold(&w, 8).await;
        // Five sessions of one overshoot are turned away: one halving.
        assert!(slots[0].refused());
        for s in &slots[1..5] {
            assert!(s.refused(), "worth another try while the window shrinks");
        }
        assert_eq!(w.limit(), 4);
        drop(slots);
        // Now above the threshold: one session more per window's worth of messages.
        for _ in 0..4 {
            let slots = hold(&w, w.limit() as usize).await;
            for s in &slots {
                s.accepted();
            }
        }
        // Slow start would have reached the ceiling; one per round gets to about 8.
        assert!((6..=8).contains(&w.limit()), "{}", w.limit());
    }

    #[tokio::test]
    async fn a_window_of_one_refused_says_not_to_try_again() {
        let w = Arc::new(RelayWindow::new(1, 32));
        let s = w.queue().session().await;
        assert!(!s.refused());
        assert_eq!(w.limit(), 1);
    }

    #[tokio::test]
    async fn a_window_never_passes_its_ceiling_and_follows_a_lower_one() {
        let w = Arc::new(RelayWindow::new(4, 6));
        for _ in 0..10 {
            let slots = hold(&w, w.limit() as usize).await;
            for s in &slots {
                s.accepted();
            }
        }
        assert_eq!(w.limit(), 6);
        w.set_ceiling(2);
        assert_eq!(w.limit(), 2);
    }

    #[tokio::test]
    async fn a_queued_send_waits_for_a_session_and_a_dropped_one_leaves_no_trace() {
        let w = Arc::new(RelayWindow::new(1, 1));
        let first = w.queue().session().await;
        let waiter = {
            let w = Arc::clone(&w);
            tokio::spawn(async move { w.queue().session().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert_eq!(w.free(), 0);
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        drop(second);
        // A send that gives up waiting (its deadline passed) leaves the count as it was.
        let held = w.queue().session().await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), w.queue().session()).await;
        assert!(gave_up.is_err());
        drop(held);
        assert_eq!(w.free(), 1);
    }
}
