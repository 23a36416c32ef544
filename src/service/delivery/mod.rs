//! Delivery from the durable outbox (API.md §10–§11). Every mint stores its code and its
//! sealed message in one commit (store first, send second); a sync mint then sends that
//! message itself and waits, an async mint answers at once and the sender delivers it.
//!
//! - `outbox`: this process's part of the outbox (what it sends and holds, its stop).
//! - `window`: each relay's adaptive session window (the concurrency of every send to it).
//! - `attempt`: one attempt — a session of the relay's window, the send, and its outcome
//!   recorded by the lease's holder (sent and superseding, retry later, failed with refund).
//! - `sender`: the background sender — claims tenant by tenant within each relay's free
//!   sessions, sweeps what nobody holds, drains and releases its leases at shutdown.

mod attempt;
pub(crate) mod breakers;
pub(crate) mod oauth2;
mod outbox;
pub mod route;
mod sender;
pub(crate) mod sessions;
pub(crate) mod transport;
pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::events::webhooks::EventData;
use super::{Core, Events, ServiceError};
use crate::crypto::cipher::{blob_version, decrypt_message, encrypt_message};
use crate::domain::keys::TenantId;
use crate::domain::tenant::Tenant;
use crate::storage::Lease;

pub use attempt::Attempt;
use outbox::locked;
pub use outbox::Outbox;
use window::RelayWindow;

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
