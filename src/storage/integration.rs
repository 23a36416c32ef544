//! Rows of the integration features (API.md §9): kept idempotent answers, a tenant's webhook,
//! its durable event outbox and the record of delivery attempts.

use crate::domain::keys::TenantId;
use crate::domain::Millis;

/// A tenant's webhook endpoint. `secret` is sealed with the data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    pub url: String,
    /// Subscribed event types, in a fixed order.
    pub events: Vec<String>,
    pub secret: Vec<u8>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl WebhookRow {
    pub fn events_joined(&self) -> String {
        self.events.join(",")
    }
}

/// Split a stored comma list of event types.
pub fn split_events(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

/// An event to deliver. `payload` is the JSON body sealed with the data key.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub tenant_id: TenantId,
    pub kind: String,
    pub payload: Vec<u8>,
    pub created_at: Millis,
}

/// A claimed event.
#[derive(Debug, Clone)]
pub struct EventJob {
    pub id: String,
    pub tenant_id: TenantId,
    pub kind: String,
    pub payload: Vec<u8>,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// How an attempt ended, for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Delivered,
    Retry { due_at: Millis },
    Failed,
}

/// One attempt, as listed by `GET /v1/tenant/webhook/deliveries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub event_id: String,
    pub kind: String,
    pub attempt: u32,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub at: Millis,
}

/// What a mint with an `Idempotency-Key` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdemBegin {
    /// The key is now held by this request (new, expired, or its holder's lease ran out).
    Started,
    /// A finished answer for the same body.
    Replay { status: u16, response: Vec<u8> },
    /// The key was used with another body.
    Mismatch,
    /// The first request with the key is still running.
    InUse,
}

/// A key being claimed.
#[derive(Debug, Clone)]
pub struct IdemClaim {
    pub tenant_id: TenantId,
    pub key_digest: Vec<u8>,
    pub fingerprint: Vec<u8>,
    pub now: Millis,
    pub lease_until: Millis,
    pub expires_at: Millis,
    /// A random token naming this claim; only its holder may settle the key.
    pub holder: String,
}
