//! Delivery from the durable outbox. Every mint stores its code and its sealed message in one
//! commit (store first, send second); a sync mint then sends that message itself and waits,
//! an async mint answers at once and the sender here delivers it. One attempt is one path for
//! both: send through the tenant's bounded sessions, then record sent (superseding older
//! codes), retry later (transient failure, async only) or failed (refunding the quota when
//! nothing can have reached the relay). Rows are claimed with a lease in the database, so
//! several instances can share the outbox and a restart picks up what is due.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::webhooks::EventData;
use super::{ServiceError, Services};
use crate::crypto::cipher::{decrypt_message, encrypt_message};
use crate::domain::delivery::{next_attempt_at, DeliveryMode};
use crate::domain::event::EventType;
use crate::domain::keys::TenantId;
use crate::domain::tenant::Tenant;
use crate::domain::Millis;
use crate::mailer::{DeliveryReason, Outgoing};
use crate::storage::{ClaimRequest, Lease, OutboxJob, StoreError};

/// How often the sender looks for due work it was not told about (retries coming due, rows
/// of other instances, expired leases).
const POLL: Duration = Duration::from_millis(250);
/// How often unleased rows of ended or expired codes are settled.
const SWEEP: Duration = Duration::from_secs(5);
/// Rows claimed per round.
const CLAIM_BATCH: u32 = 256;

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
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub purpose: String,
    #[serde(default)]
    pub locale: Option<String>,
}

/// This process's part of the outbox: its lease owner id, the wake-up for its sender, and the
/// sends it has running per tenant (so it claims no more than the tenant's sessions allow).
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<OutboxInner>,
}

struct OutboxInner {
    owner: String,
    wake: Notify,
    /// tenant id → (sends running here, that tenant's max_connections)
    running: Mutex<HashMap<String, (usize, usize)>>,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox {
            inner: Arc::new(OutboxInner {
                owner: format!("inst_{}", crate::domain::keys::random_id(16)),
                wake: Notify::new(),
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The lease owner id of this process.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Tell the sender there is new work.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    fn busy_tenants(&self) -> Vec<String> {
        self.inner
            .running
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, (n, max))| n >= max)
                    .map(|(t, _)| t.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn started(&self, tenant: &str, max: usize) {
        if let Ok(mut m) = self.inner.running.lock() {
            let e = m.entry(tenant.to_string()).or_insert((0, max));
            e.0 += 1;
            e.1 = max.max(1);
        }
    }

    fn finished(&self, tenant: &str) {
        if let Ok(mut m) = self.inner.running.lock() {
            if let Some(e) = m.get_mut(tenant) {
                e.0 = e.0.saturating_sub(1);
                if e.0 == 0 {
                    m.remove(tenant);
                }
            }
        }
        self.wake();
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Sent,
    /// Transient failure; the row is due again later.
    Retry(DeliveryReason),
    Failed(DeliveryReason),
}

impl Services {
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
            &self.keyring.get(),
            tenant.as_str(),
            key_digest,
            &json,
        )?)
    }

    fn open_message(&self, job: &OutboxJob) -> Option<StoredMessage> {
        self.open_sealed(&job.tenant_id, &job.key_digest, &job.payload)
    }

    fn open_sealed(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        payload: &[u8],
    ) -> Option<StoredMessage> {
        let plain =
            decrypt_message(&self.keyring.get(), tenant.as_str(), key_digest, payload).ok()?;
        serde_json::from_slice(&plain).ok()
    }

    /// Log what a sweep settled, and raise `otp.delivery_failed` (reason `expired`) for the
    /// messages whose code expired before the relay took them.
    async fn after_sweep(&self, swept: Vec<crate::storage::Swept>) {
        if swept.is_empty() {
            return;
        }
        tracing::info!(
            settled = swept.len(),
            "settled queued messages of ended codes"
        );
        for m in swept.iter().filter(|m| m.expired) {
            let Some(msg) = self.open_sealed(&m.tenant_id, &m.key_digest, &m.payload) else {
                continue;
            };
            if let Some(key) = &msg.shareable_key {
                self.emit(
                    &m.tenant_id,
                    None,
                    EventType::OtpDeliveryFailed,
                    EventData {
                        shareable_key: key,
                        email: &msg.email,
                        purpose: &msg.purpose,
                        locale: msg.locale.as_deref(),
                        reason: Some("expired"),
                    },
                )
                .await;
            }
        }
    }

    /// A lease for a row this process is about to send itself.
    pub(crate) fn lease(&self, now: Millis) -> Lease {
        let timeout = self.settings.load().smtp.timeout_seconds as i64 * 1000;
        Lease {
            // Long enough for the wait for a session and the whole delivery, twice.
            until: now + 2 * timeout + 30_000,
            owner: self.outbox.owner().to_string(),
        }
    }

    /// One delivery attempt of a claimed row, its outcome recorded — with the webhook event
    /// of a final outcome (`otp.sent`, `otp.delivery_failed`) in the same transaction.
    pub(crate) async fn attempt(&self, job: &OutboxJob, tenant: &Tenant) -> Attempt {
        let msg = self.open_message(job);
        self.attempt_with(job, tenant, msg.as_ref()).await
    }

    /// The event of a final outcome of this message, if its tenant subscribes.
    fn outcome_event(
        &self,
        tenant: &Tenant,
        msg: &StoredMessage,
        reason: Option<DeliveryReason>,
    ) -> Option<crate::storage::integration::NewEvent> {
        let key = msg.shareable_key.as_deref()?;
        let kind = if reason.is_some() {
            EventType::OtpDeliveryFailed
        } else {
            EventType::OtpSent
        };
        self.event_for(
            &tenant.id,
            Some(&tenant.webhook_events),
            kind,
            EventData {
                shareable_key: key,
                email: &msg.email,
                purpose: &msg.purpose,
                locale: msg.locale.as_deref(),
                reason: reason.map(|r| r.as_str()),
            },
        )
    }

    async fn attempt_with(
        &self,
        job: &OutboxJob,
        tenant: &Tenant,
        msg: Option<&StoredMessage>,
    ) -> Attempt {
        let attempts = job.attempts + 1;
        let Some(msg) = msg else {
            tracing::error!(tenant_id = %tenant.id, "a queued message cannot be opened; giving it up");
            return self
                .record_failed(job, attempts, DeliveryReason::Rejected, false, None)
                .await;
        };
        let target = match self.smtp_target(tenant).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(tenant_id = %tenant.id, error = %e, "the tenant's SMTP password cannot be decrypted");
                let event = self.outcome_event(tenant, msg, Some(DeliveryReason::Auth));
                return self
                    .record_failed(job, attempts, DeliveryReason::Auth, false, event)
                    .await;
            }
        };
        let started = std::time::Instant::now();
        let sent = self
            .mailer
            .send(
                &target,
                &Outgoing {
                    to: &job.recipient,
                    subject: &msg.subject,
                    text: &msg.text,
                    html: msg.html.as_deref(),
                    message_id: Some(&msg.message_id),
                },
            )
            .await;
        let outcome = match &sent {
            Ok(()) => "sent",
            Err(e) => e.reason.as_str(),
        };
        if let Some(m) = crate::metrics::get() {
            if let Ok(h) = m.smtp_send_seconds.get_metric_with_label_values(&[outcome]) {
                h.observe(started.elapsed().as_secs_f64());
            }
        }
        crate::metrics::inc(|m| &m.deliveries, &[job.mode.as_str(), outcome]);
        let recipient = crate::domain::email::mask(&job.recipient);
        match sent {
            Ok(()) => {
                let now = self.now();
                let key = job.key_digest.clone();
                let event = self.outcome_event(tenant, msg, None);
                let raised = event.is_some();
                self.record(move |s| s.outbox_sent(&key, attempts, now, event.as_ref()))
                    .await;
                if raised {
                    self.wake_hooks();
                }
                tracing::info!(tenant_id = %tenant.id, recipient = %recipient, mode = job.mode.as_str(), attempts, "code sent");
                Attempt::Sent
            }
            Err(e) => {
                tracing::warn!(tenant_id = %tenant.id, recipient = %recipient, mode = job.mode.as_str(), attempts, reason = e.reason.as_str(), detail = %e.detail, transient = e.transient, "delivery attempt failed");
                let now = self.now();
                let retry_at = (e.transient && job.mode == DeliveryMode::Async)
                    .then(|| next_attempt_at(attempts, now, job.expires_at))
                    .flatten();
                match retry_at {
                    Some(due) => {
                        let key = job.key_digest.clone();
                        let owner = self.outbox.owner().to_string();
                        let (reason, maybe) = (e.reason, e.maybe_delivered);
                        self.record(move |s| {
                            s.outbox_retry(&key, &owner, attempts, due, reason.as_str(), maybe)
                        })
                        .await;
                        Attempt::Retry(e.reason)
                    }
                    None => {
                        let event = self.outcome_event(tenant, msg, Some(e.reason));
                        self.record_failed(job, attempts, e.reason, e.maybe_delivered, event)
                            .await
                    }
                }
            }
        }
    }

    async fn record_failed(
        &self,
        job: &OutboxJob,
        attempts: u32,
        reason: DeliveryReason,
        maybe_delivered: bool,
        event: Option<crate::storage::integration::NewEvent>,
    ) -> Attempt {
        let now = self.now();
        let key = job.key_digest.clone();
        let raised = event.is_some();
        self.record(move |s| {
            s.outbox_failed(
                &key,
                attempts,
                reason.as_str(),
                maybe_delivered,
                now,
                event.as_ref(),
            )
        })
        .await;
        if raised {
            self.wake_hooks();
        }
        Attempt::Failed(reason)
    }

    /// Record an outcome; if the database cannot take it now, keep trying in the background
    /// (the relay's answer is a fact that must not be lost; until it is recorded the lease
    /// keeps other senders away).
    async fn record<F>(&self, f: F)
    where
        F: Fn(&dyn crate::storage::Store) -> Result<(), StoreError> + Send + Sync + 'static,
    {
        self.record_until_taken("a delivery outcome", f, || {})
            .await;
    }

    /// The sender: claim due rows (within each tenant's free sessions), deliver each on its
    /// own task, settle ended codes' rows now and then. Runs until the process stops.
    pub async fn run_sender(self) {
        let mut sweep = tokio::time::interval(SWEEP);
        loop {
            self.claim_and_send().await;
            tokio::select! {
                _ = self.outbox.inner.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = sweep.tick() => {
                    let now = self.now();
                    match self.db(move |s| s.outbox_sweep(now)).await {
                        Ok(swept) => self.after_sweep(swept).await,
                        Err(e) => tracing::warn!(error = %e, "outbox sweep failed"),
                    }
                }
            }
        }
    }

    async fn claim_and_send(&self) {
        loop {
            let now = self.now();
            let req = ClaimRequest {
                now,
                lease: self.lease(now),
                limit: CLAIM_BATCH,
                exclude_tenants: self.outbox.busy_tenants(),
            };
            let jobs = match self.db(move |s| s.claim_outbox(&req)).await {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming outbox work failed");
                    return;
                }
            };
            if jobs.is_empty() {
                return;
            }
            let full = jobs.len() as u32 >= CLAIM_BATCH;
            let mut tenants: HashMap<TenantId, Option<Tenant>> = HashMap::new();
            for job in jobs {
                if !tenants.contains_key(&job.tenant_id) {
                    let id = job.tenant_id.clone();
                    let row = self.db(move |s| s.tenant(&id)).await.ok().flatten();
                    tenants.insert(job.tenant_id.clone(), row);
                }
                let Some(Some(tenant)) = tenants.get(&job.tenant_id).cloned() else {
                    // Deleted meanwhile: its rows go with it.
                    continue;
                };
                let max = self.max_connections(&tenant);
                self.outbox.started(tenant.id.as_str(), max);
                let me = self.clone();
                tokio::spawn(async move {
                    me.attempt(&job, &tenant).await;
                    me.outbox.finished(tenant.id.as_str());
                });
            }
            if !full {
                return;
            }
        }
    }

    /// A tenant's session bound, within the server's limit.
    pub fn max_connections(&self, tenant: &Tenant) -> usize {
        let limit = self.settings.load().smtp.max_connections_limit;
        (tenant.smtp.max_connections.clamp(1, limit.max(1))) as usize
    }

    /// Outbox depth and the age of the longest-waiting due message, for metrics.
    pub async fn outbox_stats(&self) -> Result<crate::storage::OutboxStats, ServiceError> {
        let now = self.now();
        self.db(move |s| s.outbox_stats(now)).await
    }
}
