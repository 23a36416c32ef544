//! Delivery from the durable outbox (API.md §10–§11). Every mint stores its code and its
//! sealed message in one commit (store first, send second); a sync mint then sends that
//! message itself and waits, an async mint answers at once and the sender delivers it.
//!
//! - `window`: each relay's adaptive session window (the concurrency of every send to it).
//! - `attempt`: one attempt — a session of the relay's window, the send, and its outcome
//!   recorded by the lease's holder (sent and superseding, retry later, failed with refund).
//! - `sender`: the background sender — claims tenant by tenant within each relay's free
//!   sessions, sweeps what nobody holds, drains and releases its leases at shutdown.

mod attempt;
pub(crate) mod breakers;
pub(crate) mod oauth2;
pub mod route;
mod sender;
pub(crate) mod transport;
pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::events::webhooks::EventData;
use super::{Core, Events, ServiceError};
use crate::crypto::cipher::{blob_version, decrypt_message, encrypt_message};
use crate::domain::keys::TenantId;
use crate::domain::tenant::Tenant;
use crate::storage::Lease;

pub use attempt::Attempt;
use window::{RelayWindow, Windows};

/// Getting a code's message out: the outbox, its sender, routes, windows, breakers and
/// transports.
#[derive(Clone)]
pub struct Delivery {
    pub(crate) core: Arc<Core>,
    pub(crate) events: Arc<Events>,
    pub(crate) outbox: Outbox,
}

/// The message of a code as it waits in the outbox (sealed: it holds the code).
#[derive(Serialize, Deserialize)]
pub struct StoredMessage {
    pub subject: String,
    pub text: String,
    /// The HTML alternative, when the template has one (absent in rows stored before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    pub message_id: String,
    /// For the webhook events of its outcome (absent in rows stored before webhooks).
    #[serde(default)]
    pub shareable_key: Option<String>,
    /// The address or number (stored as `email`).
    #[serde(default, rename = "email")]
    pub recipient: String,
    #[serde(default)]
    pub purpose: String,
    #[serde(default)]
    pub locale: Option<String>,
    /// `sms` for a text message (absent: an email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

impl StoredMessage {
    pub fn channel(&self) -> route::Channel {
        self.channel
            .as_deref()
            .and_then(route::Channel::parse)
            .unwrap_or(route::Channel::Email)
    }

    /// What a webhook event of this message's outcome says of its code (`None`: no key to
    /// name — a message stored before webhooks, or a provider's test message).
    pub fn event_data<'a>(&'a self, reason: Option<&'a str>) -> Option<EventData<'a>> {
        Some(EventData {
            shareable_key: self.shareable_key.as_deref()?,
            recipient: &self.recipient,
            channel: self.channel(),
            purpose: &self.purpose,
            locale: self.locale.as_deref(),
            reason,
        })
    }
}

/// This process's part of the outbox: its lease owner id, the wake-up for its sender, each
/// relay's window, the messages it is sending and those whose outcome it has not recorded
/// yet, and whether it is stopping.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<OutboxInner>,
}

struct OutboxInner {
    owner: String,
    wake: Notify,
    windows: Windows,
    /// Messages this process is sending, or whose outcome it has not recorded yet (the
    /// database is away): never claimed or swept here, nor released at shutdown, until the
    /// outcome is recorded, however long that takes (API.md §11.3) — or the code expired.
    held: Mutex<HashMap<Vec<u8>, Held>>,
    /// The circuit breakers of the transports this process sends to (API.md §12.1).
    breakers: breakers::Breakers,
    /// OAuth2 access tokens of the relays this process sends to (API.md §15.1).
    tokens: oauth2::Tokens,
    /// Background sends running (claimed, not yet settled).
    running: std::sync::atomic::AtomicUsize,
    /// The messages of those sends: claimed here, their attempt under way (a count each:
    /// a message claimed again as its last send ends is still sending).
    sending: Mutex<HashMap<Vec<u8>, usize>>,
    /// The window key of the first transport of each tenant's channel, as last seen by the
    /// sender (claims count that window for the tenant's lane of the channel).
    lanes: Mutex<HashMap<(String, route::Channel), String>>,
    /// Where the next claim starts (claims take turns between tenants).
    cursor: Mutex<Option<String>>,
    stopping: AtomicBool,
    /// Set under `held`'s lock once the shutdown has read what is held: no message, sync
    /// or background, is held (so sent) here after that.
    closed: AtomicBool,
    stopped: Notify,
    /// When the stop was asked for: the drain's deadline counts from it.
    stopped_at: std::sync::OnceLock<std::time::Instant>,
    /// `delivery.max_sessions`: outbound sessions and requests in flight, all tenants
    /// together (API.md §19.3).
    sessions: Arc<tokio::sync::Semaphore>,
}

/// A message held by this process (see `OutboxInner::held`).
struct Held {
    tenant: String,
    expires_at: crate::domain::Millis,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
                sessions: Arc::new(tokio::sync::Semaphore::new(max_sessions.max(1))),
            }),
        }
    }

    /// The process-wide bound on outbound sessions and requests.
    pub(crate) fn sessions(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.sessions
    }

    /// A place in the process-wide bound for outbound work outside a code's attempt (a relay
    /// check, a provider's test message), waited for until `by`: `None` if none came free.
    pub(crate) async fn place_by(
        &self,
        by: tokio::time::Instant,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let wait = Arc::clone(&self.inner.sessions).acquire_owned();
        tokio::time::timeout_at(by, wait).await.ok()?.ok()
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
    async fn until_stopped(&self) {
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
    fn hold(
        &self,
        key: &[u8],
        tenant: &str,
        expires_at: crate::domain::Millis,
        background: bool,
    ) -> bool {
        let mut held = locked(&self.inner.held);
        if (background && self.stopping()) || self.inner.closed.load(Ordering::SeqCst) {
            return false;
        }
        held.insert(
            key.to_vec(),
            Held {
                tenant: tenant.to_string(),
                expires_at,
            },
        );
        true
    }

    /// The shutdown's last look at what is held: from now on nothing more is (`hold`
    /// refuses), so every message this process leased is either in the answer or never
    /// sent here.
    fn close(&self) -> Vec<Vec<u8>> {
        let held = locked(&self.inner.held);
        self.inner.closed.store(true, Ordering::SeqCst);
        held.keys().cloned().collect()
    }

    pub(super) fn let_go(&self, key: &[u8]) {
        locked(&self.inner.held).remove(key);
    }

    /// A background send of this message starts (see `OutboxInner::sending`).
    fn started(&self, key: &[u8]) {
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        *locked(&self.inner.sending).entry(key.to_vec()).or_default() += 1;
    }

    /// It ended: its outcome is recorded, or held until it is.
    fn ended(&self, key: &[u8]) {
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

    /// Messages whose background send is under way.
    fn sending(&self) -> Vec<Vec<u8>> {
        locked(&self.inner.sending).keys().cloned().collect()
    }

    /// Messages a claim or the sweep must not take, and a shutdown must not release, with
    /// their tenants.
    fn held(&self) -> HashMap<Vec<u8>, String> {
        locked(&self.inner.held)
            .iter()
            .map(|(k, h)| (k.clone(), h.tenant.clone()))
            .collect()
    }

    /// Forget held messages whose code expired: nothing can send them any more, and the
    /// sweep settles them (an outcome that could never be recorded — a bug, not an outage —
    /// would otherwise be held for the life of the process).
    fn tidy(&self, now: crate::domain::Millis) {
        locked(&self.inner.held).retain(|_, h| h.expires_at > now);
    }
}

/// Why a stored message cannot be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unopened {
    /// Sealed under a data key this process has not loaded (yet): never a reason to fail.
    UnknownKey,
    /// Damaged or not ours: it never will open.
    Unreadable,
}

impl Delivery {
    /// The sealed payload of a code's message.
    pub(crate) fn seal_message(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        msg: &StoredMessage,
    ) -> Result<Vec<u8>, ServiceError> {
        let json = serde_json::to_vec(msg)
            .map_err(|e| ServiceError::Internal(format!("message encoding: {e}")))?;
        Ok(encrypt_message(
            &self.core.keyring.get(),
            tenant.as_str(),
            key_digest,
            &json,
        )?)
    }

    fn open_sealed_once(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        payload: &[u8],
    ) -> Result<StoredMessage, Unopened> {
        let ring = self.core.keyring.get();
        match decrypt_message(&ring, tenant.as_str(), key_digest, payload) {
            Ok(plain) => serde_json::from_slice(&plain).map_err(|_| Unopened::Unreadable),
            Err(_) if blob_version(payload).is_some_and(|(v, _)| !ring.has_data_key(v)) => {
                Err(Unopened::UnknownKey)
            }
            Err(_) => Err(Unopened::Unreadable),
        }
    }

    /// Open a stored message; one sealed under a data key this process has not seen yet
    /// (another instance or the CLI rotated it) reloads the keyring and tries again.
    async fn open_sealed(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        payload: &[u8],
    ) -> Result<StoredMessage, Unopened> {
        match self.open_sealed_once(tenant, key_digest, payload) {
            Err(Unopened::UnknownKey) => {
                if let Err(e) = self.core.refresh_keyring().await {
                    tracing::warn!(error = %e, "reloading the keyring failed");
                }
                self.open_sealed_once(tenant, key_digest, payload)
            }
            other => other,
        }
    }

    /// Open a stored message for showing it (the test inbox).
    pub(crate) async fn open_message(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        payload: &[u8],
    ) -> Result<StoredMessage, ServiceError> {
        self.open_sealed(tenant, key_digest, payload)
            .await
            .map_err(|_| ServiceError::Internal("a stored message could not be opened".into()))
    }
}

impl Delivery {
    /// This process's lease owner, as its rows show it in `outbox.leased_by`.
    pub fn lease_owner(&self) -> &str {
        self.outbox.owner()
    }

    /// A lease for a row this process is about to send itself: long enough for a whole
    /// attempt — the waits for a session and each transport's send, a background send's
    /// time counted from when it holds its session, at most three delivery times in all
    /// (`route::send_via_route`) — and 30 s more; SMTP or HTTP, whichever may take longer.
    pub(crate) fn lease(&self) -> Lease {
        let timeout = self.core.settings.load().attempt_seconds() as i64 * 1000;
        Lease {
            owner: self.outbox.owner().to_string(),
            for_ms: 3 * timeout + 30_000,
        }
    }

    /// A tenant's session ceiling, within the server's limit (0 in the tenant: the
    /// server's default).
    pub fn max_connections(&self, tenant: &Tenant) -> u32 {
        self.ceiling(tenant.smtp.as_ref().map_or(0, |a| a.max_connections))
    }

    /// A relay's session ceiling from the account's choice (0: the server's default).
    pub fn ceiling(&self, chosen: u32) -> u32 {
        let smtp = &self.core.settings.load().smtp;
        let chosen = match chosen {
            0 => smtp.max_connections_per_tenant,
            n => n,
        };
        chosen.clamp(1, smtp.max_connections_limit.max(1))
    }

    /// Whether any transport of the tenant takes messages of this channel.
    pub(crate) fn has_route(&self, tenant: &Tenant, channel: route::Channel) -> bool {
        !transport::route(tenant, channel).is_empty()
    }

    /// The window of the first transport of a tenant's channel, where the sender queues a
    /// claimed message; remembered as the tenant's lane of that channel, whose free places
    /// cap the next claims (API.md §17.7: a text message never waits in the relay's window).
    fn lane_window(&self, tenant: &Tenant, channel: route::Channel) -> Arc<RelayWindow> {
        let routes = transport::route(tenant, channel);
        let Some(first) = routes.first() else {
            // No transport takes the channel any more: the attempt fails at once (an SMS
            // still never in the relay's window).
            let key = match channel {
                route::Channel::Email => tenant.id.to_string(),
                other => format!("{}/{}", tenant.id, other.as_str()),
            };
            return self.relay_window(&key, tenant.smtp_version, 0);
        };
        locked(&self.outbox.inner.lanes)
            .insert((tenant.id.to_string(), channel), first.key().to_string());
        self.relay_window(first.key(), tenant.smtp_version, first.ceiling())
    }

    /// What each tenant may still start here, per channel, for a claim: the free places of
    /// the window its lane queues in (a tenant without a lane yet: the claim's default; a
    /// tenant whose email goes first to its own relay: that window, also when only sync
    /// mints used it). Text messages and email that share one window (the HTTP transport
    /// primary for both) may each take its free places: at most twice, for one claim.
    fn lane_caps(
        &self,
    ) -> (
        HashMap<String, u32>,
        BTreeMap<route::Channel, HashMap<String, u32>>,
    ) {
        let free = self.outbox.inner.windows.free();
        let mut lanes = locked(&self.outbox.inner.lanes);
        // A lane whose window was let go starts again at the default.
        lanes.retain(|_, key| free.contains_key(key));
        let (mut email, mut others) = (Vec::new(), BTreeMap::new());
        for ((tenant, channel), key) in lanes.iter() {
            let Some(n) = free.get(key) else { continue };
            match channel {
                route::Channel::Email => email.push((tenant.clone(), *n)),
                other => {
                    others
                        .entry(*other)
                        .or_insert_with(HashMap::new)
                        .insert(tenant.clone(), *n);
                }
            }
        }
        drop(lanes);
        // The email lane of a tenant without an entry is its own relay's window (keyed by
        // the tenant), which `free` already holds.
        let mut caps = free;
        caps.extend(email);
        (caps, others)
    }

    /// The window of a relay by its key (the tenant's id, or its fallback's).
    fn relay_window(&self, key: &str, version: i64, chosen: u32) -> Arc<RelayWindow> {
        self.outbox.inner.windows.of(
            key,
            version,
            self.core.settings.load().smtp.initial_connections,
            self.ceiling(chosen),
        )
    }

    /// Outbox depth and the age of the longest-waiting due message, for metrics.
    pub async fn outbox_stats(&self) -> Result<crate::storage::OutboxStats, ServiceError> {
        let now = self.core.now();
        self.core.db(move |s| s.outbox_stats(now)).await
    }
}
