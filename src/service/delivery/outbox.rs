//! This process's part of the outbox: its lease owner id, the wake-up for its sender, each
//! relay's window, the messages it is sending or holding until their outcome is recorded,
//! and whether it is stopping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::window::Windows;
use super::{breakers, oauth2, route};
use crate::service::core::shares::{Share, Shares};

/// This process's part of the outbox: its lease owner id, the wake-up for its sender, each
/// relay's window, the messages it is sending and those whose outcome it has not recorded
/// yet, and whether it is stopping.
#[derive(Clone)]
pub struct Outbox {
    pub(super) inner: Arc<OutboxInner>,
}

pub(super) struct OutboxInner {
    pub(super) owner: String,
    pub(super) wake: Notify,
    pub(super) windows: Windows,
    /// Messages this process is sending, or whose outcome it has not recorded yet (the
    /// database is away): never claimed or swept here, nor released at shutdown, until the
    /// outcome is recorded, however long that takes (API.md §11.3) — or the code expired.
    pub(super) held: Mutex<HashMap<Vec<u8>, Held>>,
    /// The circuit breakers of the transports this process sends to (API.md §12.1).
    pub(super) breakers: breakers::Breakers,
    /// OAuth2 access tokens of the relays this process sends to (API.md §15.1).
    pub(super) tokens: oauth2::Tokens,
    /// Background sends running (claimed, not yet settled).
    pub(super) running: std::sync::atomic::AtomicUsize,
    /// The messages of those sends: claimed here, their attempt under way (a count each:
    /// a message claimed again as its last send ends is still sending).
    pub(super) sending: Mutex<HashMap<Vec<u8>, usize>>,
    /// The window key of the first transport of each tenant's channel, as last seen by the
    /// sender (claims count that window for the tenant's lane of the channel).
    pub(super) lanes: Mutex<HashMap<(String, route::Channel), String>>,
    /// Where the next claim starts (claims take turns between tenants).
    pub(super) cursor: Mutex<Option<String>>,
    pub(super) stopping: AtomicBool,
    /// Set under `held`'s lock once the shutdown has read what is held: no message, sync
    /// or background, is held (so sent) here after that.
    pub(super) closed: AtomicBool,
    pub(super) stopped: Notify,
    /// When the stop was asked for: the drain's deadline counts from it.
    pub(super) stopped_at: std::sync::OnceLock<std::time::Instant>,
    /// `delivery.max_sessions`: outbound sessions and requests in flight, all tenants
    /// together (API.md §19.3), shared fairly between them.
    pub(super) sessions: Arc<super::sessions::Sessions>,
    /// Each tenant's outbound work outside a code's attempt in flight (relay checks,
    /// providers' test messages): at most [`OUTSIDE_PER_TENANT`].
    pub(super) outside: Arc<Shares>,
}

/// Relay checks and providers' test messages one tenant may have in flight at once: a
/// code's attempt is bounded by its transport's window, these by this share, so one tenant
/// (its own slow relay or provider) cannot take `delivery.max_sessions` from the others.
pub(crate) const OUTSIDE_PER_TENANT: usize = 4;

/// A place for outbound work outside a code's attempt: one of `delivery.max_sessions` and
/// one of its tenant's [`OUTSIDE_PER_TENANT`], both given back when dropped.
pub(crate) struct OutsidePlace {
    _session: super::sessions::Place,
    _share: Share,
}

/// A message held by this process (see `OutboxInner::held`), and by what: each holder lets
/// go of its own hold only (found by a review: a resend's hand-over hold, taken while the
/// key's last send recorded its outcome, was let go by that record, and a stray-lease sweep
/// then gave the resend's row back before its send began — sent twice).
pub(super) struct Held {
    tenant: String,
    expires_at: crate::domain::Millis,
    /// Its send, then the record of that send's outcome (one hold however often taken: the
    /// record lets go of it).
    sending: bool,
    /// Async mints and resends of its key waiting for their store to answer (a count: two
    /// resends of one key may wait at once).
    handing_over: usize,
}

impl Held {
    fn free(&self) -> bool {
        !self.sending && self.handing_over == 0
    }
}

pub(super) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Sets and a cursor, consistent after every statement.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Outbox {
    /// `max_sessions`: the process-wide bound on outbound sessions and requests.
    pub fn new(max_sessions: usize) -> Outbox {
        Outbox {
            inner: Arc::new(OutboxInner {
                owner: format!("inst_{}", crate::domain::keys::random_id(16)),
                wake: Notify::new(),
                windows: Windows::default(),
                held: Mutex::new(HashMap::new()),
                breakers: breakers::Breakers::default(),
                tokens: oauth2::Tokens::default(),
                running: std::sync::atomic::AtomicUsize::new(0),
                sending: Mutex::new(HashMap::new()),
                lanes: Mutex::new(HashMap::new()),
                cursor: Mutex::new(None),
                stopping: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                stopped: Notify::new(),
                stopped_at: std::sync::OnceLock::new(),
                sessions: super::sessions::Sessions::new(max_sessions),
                outside: Shares::new(OUTSIDE_PER_TENANT),
            }),
        }
    }

    /// The process-wide bound on outbound sessions and requests.
    pub(crate) fn sessions(&self) -> &Arc<super::sessions::Sessions> {
        &self.inner.sessions
    }

    /// A place for the tenant's outbound work outside a code's attempt (a relay check, a
    /// provider's test message): `None` at once when the tenant already has
    /// [`OUTSIDE_PER_TENANT`] in flight, or when no place in the process-wide bound came
    /// free by `by`.
    pub(crate) async fn place_by(
        &self,
        tenant: &str,
        by: tokio::time::Instant,
    ) -> Option<OutsidePlace> {
        let share = self.inner.outside.take(tenant)?;
        let session = tokio::time::timeout_at(by, self.inner.sessions.place(tenant))
            .await
            .ok()?;
        Some(OutsidePlace {
            _session: session,
            _share: share,
        })
    }

    pub(crate) fn breakers(&self) -> &breakers::Breakers {
        &self.inner.breakers
    }

    pub(crate) fn tokens(&self) -> &oauth2::Tokens {
        &self.inner.tokens
    }

    /// Forget the breakers of a tenant's transports: their settings changed. (OAuth2
    /// tokens are kept by the relay's settings version.)
    pub(crate) fn forget(&self, tenant: &str) {
        self.inner.breakers.forget(tenant);
    }

    /// Forget all this process keeps of a deleted tenant's transports (breakers, tokens).
    pub(crate) fn forget_deleted(&self, tenant: &str) {
        self.inner.breakers.forget(tenant);
        self.inner.tokens.forget(tenant);
    }

    /// The lease owner id of this process.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Tell the sender there is new work.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The current window of every relay this process sends to (metrics: no tenant ids).
    pub fn windows(&self) -> Vec<u32> {
        self.inner.windows.limits()
    }

    /// Stop claiming; queued background sends give up their turn (shutdown).
    pub fn stop(&self) {
        let _ = self.inner.stopped_at.set(std::time::Instant::now());
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stopped.notify_waiters();
        self.wake();
    }

    pub fn stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// Resolves once `stop` was called.
    pub(super) async fn until_stopped(&self) {
        let stopped = self.inner.stopped.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        if !self.stopping() {
            stopped.await;
        }
    }

    /// Hold a message until its outcome is recorded (see `OutboxInner::held`). A background
    /// send is not held once the process is stopping (`false`): the shutdown gives its lease
    /// back, so it must not go out. The flag is read under the lock the shutdown reads `held`
    /// under, after it set the flag: a message is either held there or never sent here.
    pub(super) fn hold(
        &self,
        key: &[u8],
        tenant: &str,
        expires_at: crate::domain::Millis,
        background: bool,
    ) -> bool {
        self.hold_by(key, tenant, expires_at, background, |h| h.sending = true)
    }

    /// Hold an async mint's or resend's message until its store answers (see
    /// `Delivery::hold_for_hand_over`); `let_go_hand_over` ends this hold only.
    pub(super) fn hold_hand_over(
        &self,
        key: &[u8],
        tenant: &str,
        expires_at: crate::domain::Millis,
    ) {
        self.hold_by(key, tenant, expires_at, false, |h| h.handing_over += 1);
    }

    fn hold_by(
        &self,
        key: &[u8],
        tenant: &str,
        expires_at: crate::domain::Millis,
        background: bool,
        by: impl FnOnce(&mut Held),
    ) -> bool {
        let mut held = locked(&self.inner.held);
        if (background && self.stopping()) || self.inner.closed.load(Ordering::SeqCst) {
            return false;
        }
        let h = held.entry(key.to_vec()).or_insert_with(|| Held {
            tenant: tenant.to_string(),
            expires_at,
            sending: false,
            handing_over: 0,
        });
        h.expires_at = h.expires_at.max(expires_at);
        by(h);
        true
    }

    /// The shutdown's last look at what is held: from now on nothing more is (`hold`
    /// refuses), so every message this process leased is either in the answer or never
    /// sent here.
    pub(super) fn close(&self) -> Vec<Vec<u8>> {
        let held = locked(&self.inner.held);
        self.inner.closed.store(true, Ordering::SeqCst);
        held.keys().cloned().collect()
    }

    /// The outcome of its send is recorded: that hold ends (a hand-over's stays).
    pub(super) fn let_go(&self, key: &[u8]) {
        self.let_go_by(key, |h| h.sending = false);
    }

    /// A hand-over is over (its message sending, or never stored): its hold ends.
    pub(super) fn let_go_hand_over(&self, key: &[u8]) {
        self.let_go_by(key, |h| h.handing_over = h.handing_over.saturating_sub(1));
    }

    fn let_go_by(&self, key: &[u8], by: impl FnOnce(&mut Held)) {
        let mut held = locked(&self.inner.held);
        if let Some(h) = held.get_mut(key) {
            by(h);
            if h.free() {
                held.remove(key);
            }
        }
    }

    /// A background send of this message starts (see `OutboxInner::sending`).
    pub(super) fn started(&self, key: &[u8]) {
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        *locked(&self.inner.sending).entry(key.to_vec()).or_default() += 1;
    }

    /// It ended: its outcome is recorded, or held until it is.
    pub(super) fn ended(&self, key: &[u8]) {
        let mut sending = locked(&self.inner.sending);
        if let Some(n) = sending.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                sending.remove(key);
            }
        }
        drop(sending);
        self.inner.running.fetch_sub(1, Ordering::SeqCst);
        self.wake();
    }

    /// The messages sending or held, read at one instant (both locks at once): a message
    /// moving from one to the other (a send that ends holds its outcome first; a message
    /// handed over is sending before it is let go) is in at least one of them at every
    /// instant, so it is never missed between two reads.
    pub(super) fn sending_or_held(&self) -> Vec<Vec<u8>> {
        let sending = locked(&self.inner.sending);
        let held = locked(&self.inner.held);
        sending.keys().chain(held.keys()).cloned().collect()
    }

    /// Messages whose background send is under way.
    pub(super) fn sending(&self) -> Vec<Vec<u8>> {
        locked(&self.inner.sending).keys().cloned().collect()
    }

    /// Messages a claim or the sweep must not take, and a shutdown must not release, with
    /// their tenants.
    pub(super) fn held(&self) -> HashMap<Vec<u8>, String> {
        locked(&self.inner.held)
            .iter()
            .map(|(k, h)| (k.clone(), h.tenant.clone()))
            .collect()
    }

    /// Forget held messages whose code expired: nothing can send them any more, and the
    /// sweep settles them (an outcome that could never be recorded — a bug, not an outage —
    /// would otherwise be held for the life of the process).
    pub(super) fn tidy(&self, now: crate::domain::Millis) {
        locked(&self.inner.held).retain(|_, h| h.expires_at > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;

    fn shares(o: &Outbox) -> HashMap<String, usize> {
        o.inner.outside.held()
    }

    /// Each holder lets go of its own hold only: a send's recorded outcome does not end a
    /// resend's hand-over taken meanwhile, nor one hand-over another's (found by a review:
    /// the stray-lease sweep then gave the resend's row back before its send began).
    #[test]
    fn a_hold_ends_only_when_every_holder_let_go() {
        let o = Outbox::new(4);
        let (k, far) = (b"key".as_slice(), i64::MAX);
        assert!(o.hold(k, "tnt_a", far, false));
        o.hold_hand_over(k, "tnt_a", far);
        o.let_go(k);
        assert_eq!(
            o.sending_or_held(),
            vec![k.to_vec()],
            "the hand-over holds it"
        );
        o.hold_hand_over(k, "tnt_a", far);
        o.let_go_hand_over(k);
        assert!(
            o.held().contains_key(k),
            "the other hand-over still holds it"
        );
        o.let_go_hand_over(k);
        assert!(o.held().is_empty());
        // Letting go of what nobody holds changes nothing.
        o.let_go(k);
        o.let_go_hand_over(k);
        assert!(o.held().is_empty());
    }

    /// A tenant's outbound work outside a code's attempt is four at a time: a fifth is
    /// refused at once, another tenant's is not, and a place given back is taken again.
    #[tokio::test]
    async fn a_tenants_share_is_four_places_and_is_given_back() {
        let o = Outbox::new(16);
        let far = Instant::now() + Duration::from_secs(60);
        let mut held = Vec::new();
        for _ in 0..OUTSIDE_PER_TENANT {
            held.push(o.place_by("tnt_a", far).await.expect("a place"));
        }
        let asked = Instant::now();
        assert!(o.place_by("tnt_a", far).await.is_none());
        assert!(asked.elapsed() < Duration::from_secs(1), "refused at once");
        assert!(o.place_by("tnt_b", far).await.is_some());
        held.pop();
        assert!(o.place_by("tnt_a", far).await.is_some());
        drop(held);
        assert!(shares(&o).is_empty(), "{:?}", shares(&o));
    }

    /// A share is given back whatever becomes of the wait for a session: one that timed out,
    /// or one dropped while it waited (a client that went away).
    #[tokio::test]
    async fn a_wait_that_times_out_or_is_dropped_gives_its_share_back() {
        let o = Outbox::new(1);
        let only = o
            .place_by("tnt_a", Instant::now() + Duration::from_secs(60))
            .await
            .expect("the only session");
        // More waits than the share holds, each timing out: each gave its share back.
        for _ in 0..OUTSIDE_PER_TENANT + 1 {
            let soon = Instant::now() + Duration::from_millis(20);
            assert!(o.place_by("tnt_b", soon).await.is_none());
            assert_eq!(shares(&o).get("tnt_b"), None);
        }
        let waiting = o.place_by("tnt_c", Instant::now() + Duration::from_secs(60));
        let waiting = tokio::time::timeout(Duration::from_millis(20), waiting).await;
        assert!(waiting.is_err(), "it was still waiting for the session");
        assert_eq!(
            shares(&o).get("tnt_c"),
            None,
            "dropped, its share went back"
        );
        drop(only);
        assert!(shares(&o).is_empty(), "{:?}", shares(&o));
        assert!(o
            .place_by("tnt_b", Instant::now() + Duration::from_secs(1))
            .await
            .is_some());
    }
}
