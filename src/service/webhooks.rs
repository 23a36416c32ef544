//! Webhooks (API.md §9): a tenant's endpoint, the events its codes raise, and the sender that
//! delivers them at least once from the durable event outbox — claimed with a lease, so any
//! instance (or this one after a restart) picks up what is due, signed per Standard Webhooks,
//! retried after about 5 s, 30 s, 2 min, 10 min, 1 h and 6 h, then marked failed. A webhook
//! failure never changes an OTP answer.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::{Notify, Semaphore};

use super::{ServiceError, Services};
use crate::clock::rfc3339;
use crate::crypto::cipher::{blob_version, decrypt_record, encrypt_record};
use crate::crypto::keyring::Keyring;
use crate::domain::event::EventType;
use crate::domain::keys::TenantId;
use crate::domain::tenant::Tenant;
use crate::domain::webhook::{Webhook, WebhookAttempt};
use crate::storage::integration::{EventJob, EventOutcome, NewEvent};
use crate::webhook::{check_url_resolved, new_secret, signature, SendResult, UrlRefusal};

/// The waits before the second to seventh attempts; after the seventh the event has failed.
pub const RETRY_DELAYS_MS: [i64; 6] = [5_000, 30_000, 120_000, 600_000, 3_600_000, 21_600_000];
/// Attempts listed by `GET /v1/tenant/webhook/deliveries`.
pub const DELIVERIES_LISTED: u32 = 100;

pub(super) const SECRET_KIND: &str = "webhook-secret";
const EVENT_KIND: &str = "webhook-event";
const POLL: Duration = Duration::from_millis(500);
/// Requests in flight per process.
const IN_FLIGHT: usize = 32;

/// This process's part of the event outbox: its lease owner id, the sender's wake-up, the
/// HTTP client and the bound on requests in flight.
#[derive(Clone)]
pub struct Hooks {
    owner: String,
    wake: Arc<Notify>,
    slots: Arc<Semaphore>,
    client: crate::webhook::WebhookClient,
}

impl Hooks {
    pub fn new(client: crate::webhook::WebhookClient) -> Hooks {
        Hooks {
            owner: format!("inst_{}", crate::domain::keys::random_id(16)),
            wake: Arc::new(Notify::new()),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            client,
        }
    }
}

/// A webhook to store.
#[derive(Debug)]
pub struct WebhookInput {
    pub url: String,
    pub events: Vec<String>,
}

/// A stored webhook, with its secret when it is shown (creation, rotation).
#[derive(Debug)]
pub struct WebhookShown {
    pub row: Webhook,
    pub secret: Option<String>,
}

/// What an event says about a code.
#[derive(Debug, Clone, Copy)]
pub struct EventData<'a> {
    pub shareable_key: &'a str,
    pub email: &'a str,
    pub purpose: &'a str,
    pub locale: Option<&'a str>,
    pub reason: Option<&'a str>,
}

fn subscribes(list: &str, kind: EventType) -> bool {
    list.split(',').any(|e| e == kind.as_str())
}

fn event_data(d: &EventData<'_>) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("shareable_key".into(), json!(d.shareable_key));
    data.insert("email".into(), json!(d.email));
    data.insert("purpose".into(), json!(d.purpose));
    if let Some(l) = d.locale {
        data.insert("locale".into(), json!(l));
    }
    if let Some(r) = d.reason {
        data.insert("reason".into(), json!(r));
    }
    data
}

fn refused(r: UrlRefusal) -> ServiceError {
    use crate::net_policy::HostRefusal;
    match r {
        UrlRefusal::Malformed => ServiceError::field("url", r.to_string()),
        UrlRefusal::Plaintext => ServiceError::WebhookRefused("webhook_plaintext_not_allowed"),
        UrlRefusal::Host(HostRefusal::Unresolvable) => {
            ServiceError::WebhookRefused("webhook_host_unresolvable")
        }
        UrlRefusal::Host(_) => ServiceError::WebhookRefused("webhook_host_not_allowed"),
    }
}

impl Services {
    fn seal_secret(&self, tenant: &TenantId, secret: &[u8]) -> Result<Vec<u8>, ServiceError> {
        Ok(encrypt_record(
            &self.keyring.get(),
            SECRET_KIND,
            tenant.as_str(),
            b"",
            secret,
        )?)
    }

    /// Create or replace the tenant's webhook. The URL passes the host policy now (and at
    /// every send); a new webhook gets a secret, shown in this answer only.
    pub async fn put_webhook(
        &self,
        tenant: &Tenant,
        input: WebhookInput,
    ) -> Result<WebhookShown, ServiceError> {
        if input.events.is_empty() {
            return Err(ServiceError::field(
                "events",
                format!(
                    "must name at least one of {}",
                    EventType::subscribable_list()
                ),
            ));
        }
        let Some(asked) = input
            .events
            .iter()
            .map(|e| EventType::parse_subscribable(e))
            .collect::<Option<Vec<EventType>>>()
        else {
            return Err(ServiceError::field(
                "events",
                format!("each must be one of {}", EventType::subscribable_list()),
            ));
        };
        // One canonical order, no duplicates.
        let events: Vec<EventType> = EventType::SUBSCRIBABLE
            .into_iter()
            .filter(|t| asked.contains(t))
            .collect();
        let settings = self.settings.load_full();
        let url = check_url_resolved(&input.url, &settings)
            .await
            .map_err(refused)?
            .to_string();
        let now = self.now();
        let (secret_bytes, shown) = new_secret();
        let row = Webhook {
            url,
            events,
            secret: self.seal_secret(&tenant.id, &secret_bytes)?,
            created_at: now,
            updated_at: now,
        };
        let (id, r) = (tenant.id.clone(), row.clone());
        let created = self
            .db(move |s| s.put_webhook(&id, &r))
            .await?
            .ok_or(ServiceError::TenantNotFound)?;
        tracing::info!(tenant_id = %tenant.id, created, "webhook stored");
        if created {
            return Ok(WebhookShown {
                row,
                secret: Some(shown),
            });
        }
        let stored = self.webhook(&tenant.id).await?;
        Ok(WebhookShown {
            row: stored,
            secret: None,
        })
    }

    pub async fn webhook(&self, tenant: &TenantId) -> Result<Webhook, ServiceError> {
        let id = tenant.clone();
        self.db(move |s| s.webhook(&id))
            .await?
            .ok_or(ServiceError::WebhookNotFound)
    }

    pub async fn delete_webhook(&self, tenant: &TenantId) -> Result<(), ServiceError> {
        let id = tenant.clone();
        if self.db(move |s| s.delete_webhook(&id)).await? {
            tracing::info!(tenant_id = %tenant, "webhook deleted");
            Ok(())
        } else {
            Err(ServiceError::WebhookNotFound)
        }
    }

    /// A new secret; the old one stops signing at once.
    pub async fn rotate_webhook_secret(
        &self,
        tenant: &TenantId,
    ) -> Result<WebhookShown, ServiceError> {
        let (bytes, shown) = new_secret();
        let sealed = self.seal_secret(tenant, &bytes)?;
        let (id, now) = (tenant.clone(), self.now());
        if !self
            .db(move |s| s.set_webhook_secret(&id, &sealed, now))
            .await?
        {
            return Err(ServiceError::WebhookNotFound);
        }
        tracing::info!(tenant_id = %tenant, "webhook secret rotated");
        Ok(WebhookShown {
            row: self.webhook(tenant).await?,
            secret: Some(shown),
        })
    }

    /// Queue a `webhook.test` event; returns its id.
    pub async fn test_webhook(&self, tenant: &TenantId) -> Result<String, ServiceError> {
        let data = Map::new();
        match self
            .queue_event(tenant, EventType::WebhookTest, data)
            .await?
        {
            Some(id) => Ok(id),
            None => Err(ServiceError::WebhookNotFound),
        }
    }

    pub async fn webhook_deliveries(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<WebhookAttempt>, ServiceError> {
        let id = tenant.clone();
        self.db(move |s| s.webhook_deliveries(&id, DELIVERIES_LISTED))
            .await
    }

    /// Seal an event for the tenant's endpoint.
    fn build_event(
        &self,
        tenant: &TenantId,
        kind: EventType,
        data: Map<String, Value>,
    ) -> Result<NewEvent, ServiceError> {
        let now = self.now();
        let id = format!("msg_{}", crate::domain::keys::random_id(27));
        let body = json!({"type": kind.as_str(), "timestamp": rfc3339(now), "data": data});
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| ServiceError::Internal(format!("event encoding: {e}")))?;
        let payload = encrypt_record(
            &self.keyring.get(),
            EVENT_KIND,
            tenant.as_str(),
            id.as_bytes(),
            &bytes,
        )?;
        Ok(NewEvent {
            id,
            tenant_id: tenant.clone(),
            kind,
            payload,
            created_at: now,
        })
    }

    /// Seal and store an event for the tenant's endpoint; `None` when it has no webhook (or
    /// no longer subscribes to the type).
    async fn queue_event(
        &self,
        tenant: &TenantId,
        kind: EventType,
        data: Map<String, Value>,
    ) -> Result<Option<String>, ServiceError> {
        let event = self.build_event(tenant, kind, data)?;
        let id = event.id.clone();
        if self.db(move |s| s.insert_event(&event)).await? {
            self.wake_hooks();
            Ok(Some(id))
        } else {
            Ok(None)
        }
    }

    /// Tell this process's webhook sender there is new work.
    pub(crate) fn wake_hooks(&self) {
        self.hooks.wake.notify_one();
    }

    /// The event about a code to write together with the change it reports. `None` when the
    /// tenant does not subscribe to it (`subscribed`: its list when the caller has the tenant
    /// row; without it the database decides when writing), or when it cannot be sealed
    /// (logged: an event never fails the OTP answer).
    pub(crate) fn event_for(
        &self,
        tenant: &TenantId,
        subscribed: Option<&str>,
        kind: EventType,
        d: EventData<'_>,
    ) -> Option<NewEvent> {
        if subscribed.is_some_and(|l| !subscribes(l, kind)) {
            return None;
        }
        match self.build_event(tenant, kind, event_data(&d)) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, event = %kind, error = %e, "a webhook event could not be sealed");
                None
            }
        }
    }

    /// Raise an event about a code in a write of its own, if the tenant's webhook subscribes
    /// to it (for outcomes that have no write of their own to join). Never fails the caller.
    pub(crate) async fn emit(
        &self,
        tenant: &TenantId,
        subscribed: Option<&str>,
        kind: EventType,
        d: EventData<'_>,
    ) {
        let Some(event) = self.event_for(tenant, subscribed, kind, d) else {
            return;
        };
        match self.db(move |s| s.insert_event(&event)).await {
            Ok(true) => self.wake_hooks(),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, event = %kind, error = %e, "a webhook event could not be stored")
            }
        }
    }

    /// The webhook sender: claim due events, post each on its own task (at most 32 at once
    /// per process). Runs until the process stops.
    pub async fn run_webhook_sender(self) {
        loop {
            self.claim_and_post().await;
            tokio::select! {
                _ = self.hooks.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn claim_and_post(&self) {
        let free = self.hooks.slots.available_permits();
        if free == 0 {
            return;
        }
        let now = self.now();
        let timeout_ms = self.settings.load().webhooks.timeout_seconds as i64 * 1000;
        let lease_until = now + 2 * timeout_ms + 30_000;
        let owner = self.hooks.owner.clone();
        let limit = free as u32;
        let jobs = match self
            .db(move |s| s.claim_events(&owner, now, lease_until, limit))
            .await
        {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhook events failed");
                return;
            }
        };
        for job in jobs {
            let Ok(permit) = Arc::clone(&self.hooks.slots).acquire_owned().await else {
                return;
            };
            let me = self.clone();
            tokio::spawn(async move {
                me.post_event(job).await;
                drop(permit);
                me.hooks.wake.notify_one();
            });
        }
    }

    async fn post_event(&self, job: EventJob) {
        let attempt = job.attempts + 1;
        let tid = job.tenant_id.clone();
        let hook = self.db(move |s| s.webhook(&tid)).await;
        let open = |ring: &Keyring, h: &Webhook| {
            let body = decrypt_record(
                ring,
                EVENT_KIND,
                job.tenant_id.as_str(),
                job.id.as_bytes(),
                &job.payload,
            );
            let secret = decrypt_record(ring, SECRET_KIND, job.tenant_id.as_str(), b"", &h.secret);
            match (body, secret) {
                (Ok(b), Ok(s)) => Ok((h.url.clone(), b, s)),
                _ => Err("unreadable"),
            }
        };
        let opened = match hook {
            Ok(Some(h)) => {
                let mut opened = open(&self.keyring.get(), &h);
                // Sealed under a data key this process has not seen yet (a rotation by the
                // CLI or another instance): reload the keyring once and try again.
                let unknown = |blob: &[u8]| {
                    blob_version(blob).is_some_and(|(v, _)| !self.keyring.get().has_data_key(v))
                };
                if opened.is_err()
                    && (unknown(&h.secret) || unknown(&job.payload))
                    && self.refresh_keyring().await.unwrap_or(false)
                {
                    opened = open(&self.keyring.get(), &h);
                }
                opened
            }
            Ok(None) => Err("no_endpoint"),
            Err(e) => {
                // The database is away: the lease runs out and the event is tried again.
                tracing::warn!(error = %e, "reading a webhook failed");
                return;
            }
        };
        let (status_code, error, delivered) = match opened {
            Err(why) => (None, Some(why), false),
            Ok((url, body, secret)) => {
                let ts = self.now().div_euclid(1000);
                let headers = [
                    ("webhook-id", job.id.clone()),
                    ("webhook-timestamp", ts.to_string()),
                    ("webhook-signature", signature(&secret, &job.id, ts, &body)),
                ];
                match self.hooks.client.send(&url, &headers, body).await {
                    SendResult::Status(c) => (Some(c), None, (200..300).contains(&c)),
                    SendResult::Error(e) => (None, Some(e), false),
                }
            }
        };
        let now = self.now();
        // No endpoint any more is final; an unreadable record may be sealed under a data key
        // another instance made a moment ago (this one reloads its keyring every second).
        let permanent = error == Some("no_endpoint");
        let outcome = if delivered {
            EventOutcome::Delivered
        } else {
            match RETRY_DELAYS_MS.get(job.attempts as usize) {
                Some(delay) if !permanent => EventOutcome::Retry {
                    due_at: now + delay,
                },
                _ => EventOutcome::Failed,
            }
        };
        let outcome_label = match outcome {
            EventOutcome::Delivered => "delivered",
            EventOutcome::Retry { .. } => "retry",
            EventOutcome::Failed => "failed",
        };
        crate::metrics::inc(|m| &m.webhook_attempts, &[outcome_label]);
        if !delivered {
            tracing::warn!(tenant_id = %job.tenant_id, event_id = %job.id, event = %job.kind, attempt,
                status_code = ?status_code, error = ?error, outcome = outcome_label, "webhook attempt failed");
        }
        let owner = self.hooks.owner.clone();
        let (id, err) = (job.id.clone(), error.map(str::to_string));
        if let Err(e) = self
            .db(move |s| {
                s.settle_event(
                    &id,
                    &owner,
                    attempt,
                    outcome,
                    status_code,
                    err.as_deref(),
                    now,
                )
            })
            .await
        {
            tracing::warn!(error = %e, event_id = %job.id, "recording a webhook attempt failed; the lease will run out and the event be tried again");
        }
    }
}
