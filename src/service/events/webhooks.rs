//! Webhooks (API.md §9): a tenant's endpoint and the events its codes raise, sealed and queued
//! in the durable event outbox (often in the same transaction as the change they report);
//! `sender` delivers them. A webhook failure never changes an OTP answer.

use serde_json::{json, Map, Value};

use crate::clock::rfc3339;
use crate::crypto::cipher::encrypt_record;
use crate::domain::event::EventType;
use crate::domain::keys::TenantId;
use crate::domain::recipient::Channel;
use crate::domain::tenant::Tenant;
use crate::domain::webhook::{Webhook, WebhookAttempt};
use crate::outbound::{check_url_resolved, new_secret, UrlRefusal};
use crate::service::{ErrorCode, Events, ServiceError};
use crate::storage::integration::NewEvent;

/// The waits before the second to seventh attempts; after the seventh the event has failed.
pub const RETRY_DELAYS_MS: [i64; 6] = [5_000, 30_000, 120_000, 600_000, 3_600_000, 21_600_000];
/// Attempts listed by `GET /v1/tenant/webhook/deliveries`.
pub const DELIVERIES_LISTED: u32 = 100;

pub(crate) const SECRET_KIND: &str = "webhook-secret";
pub(super) const EVENT_KIND: &str = "webhook-event";

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
    /// The address or number the code went to, shown as `email` or `phone` by `channel`.
    pub recipient: &'a str,
    pub channel: Channel,
    pub purpose: &'a str,
    pub locale: Option<&'a str>,
    pub reason: Option<&'a str>,
}

fn subscribes(list: &str, kind: EventType) -> bool {
    list.split(',').any(|e| e == kind.as_str())
}

fn event_data(d: &EventData<'_>) -> Map<String, Value> {
    let mut data = Map::new();
    // A blocked mint made no key.
    if !d.shareable_key.is_empty() {
        data.insert("shareable_key".into(), json!(d.shareable_key));
    }
    // A text message's recipient is a phone number (API.md §12.3).
    let field = if d.channel.is_phone() {
        "phone"
    } else {
        "email"
    };
    data.insert(field.into(), json!(d.recipient));
    // A provider's bounce or complaint names a recipient, not a code: no purpose to show.
    if !d.purpose.is_empty() {
        data.insert("purpose".into(), json!(d.purpose));
    }
    if let Some(l) = d.locale {
        data.insert("locale".into(), json!(l));
    }
    if let Some(r) = d.reason {
        data.insert("reason".into(), json!(r));
    }
    data
}

/// An endpoint URL in `field` refused by the outbound address policy (the webhooks'
/// settings: a webhook's, the HTTP transport's, an OAuth2 token URL).
pub(crate) fn refused(field: &str, r: UrlRefusal) -> ServiceError {
    use crate::net_policy::HostRefusal;
    let code = match r {
        UrlRefusal::Malformed => return ServiceError::field(field, r.to_string()),
        UrlRefusal::Plaintext => ErrorCode::WebhookPlaintextNotAllowed,
        UrlRefusal::Host(HostRefusal::Unresolvable) => ErrorCode::WebhookHostUnresolvable,
        UrlRefusal::Host(_) => ErrorCode::WebhookHostNotAllowed,
    };
    ServiceError::WebhookRefused(code, field.to_string())
}

impl Events {
    fn seal_secret(&self, tenant: &TenantId, secret: &[u8]) -> Result<Vec<u8>, ServiceError> {
        Ok(encrypt_record(
            &self.core.keyring.get(),
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
        // In the order given, without duplicates (the answer shows what was asked).
        let mut events: Vec<EventType> = Vec::with_capacity(asked.len());
        for t in asked {
            if !events.contains(&t) {
                events.push(t);
            }
        }
        let settings = self.core.settings.load_full();
        let url = check_url_resolved(&input.url, &settings)
            .await
            .map_err(|r| refused("url", r))?
            .to_string();
        let now = self.core.now();
        let (secret_bytes, shown) = new_secret();
        let row = Webhook {
            url,
            events,
            secret: self.seal_secret(&tenant.id, &secret_bytes)?,
            created_at: now,
            updated_at: now,
            disabled: None,
        };
        let (id, r) = (tenant.id.clone(), row.clone());
        let created = self
            .core
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
        self.core
            .db(move |s| s.webhook(&id))
            .await?
            .ok_or(ServiceError::WebhookNotFound)
    }

    pub async fn delete_webhook(&self, tenant: &TenantId) -> Result<(), ServiceError> {
        let id = tenant.clone();
        if self.core.db(move |s| s.delete_webhook(&id)).await? {
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
        let (id, now) = (tenant.clone(), self.core.now());
        if !self
            .core
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
            // Nothing queued: no webhook, or one its endpoint disabled with a 410.
            None => match self.webhook(tenant).await?.disabled {
                Some(_) => Err(ServiceError::Conflict(
                    "the webhook is disabled since its endpoint answered 410; PUT it again to turn it back on",
                )),
                None => Err(ServiceError::WebhookNotFound),
            },
        }
    }

    pub async fn webhook_deliveries(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<WebhookAttempt>, ServiceError> {
        let id = tenant.clone();
        self.core
            .db(move |s| s.webhook_deliveries(&id, DELIVERIES_LISTED))
            .await
    }

    /// Seal an event for the tenant's endpoint.
    fn build_event(
        &self,
        tenant: &TenantId,
        kind: EventType,
        data: Map<String, Value>,
    ) -> Result<NewEvent, ServiceError> {
        let now = self.core.now();
        let id = format!("msg_{}", crate::domain::keys::random_id(27));
        let body = json!({"type": kind.as_str(), "timestamp": rfc3339(now), "data": data});
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| ServiceError::Internal(format!("event encoding: {e}")))?;
        let payload = encrypt_record(
            &self.core.keyring.get(),
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
        if self.core.db(move |s| s.insert_event(&event)).await? {
            self.wake_hooks();
            Ok(Some(id))
        } else {
            Ok(None)
        }
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
        match self.core.db(move |s| s.insert_event(&event)).await {
            Ok(true) => self.wake_hooks(),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, event = %kind, error = %e, "a webhook event could not be stored")
            }
        }
    }
}
