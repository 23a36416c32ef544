//! The integration aggregate (API.md §9): kept idempotent answers, a tenant's webhook, its
//! durable event outbox and the record of delivery attempts.

use super::engine::{args, Exec};
use super::{Fairness, StoreError};
use crate::domain::event::EventType;
use crate::domain::keys::TenantId;
use crate::domain::webhook::{Webhook, WebhookAttempt};
use crate::domain::Millis;

/// An event to deliver. `payload` is the JSON body sealed with the data key.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub tenant_id: TenantId,
    pub kind: EventType,
    pub payload: Vec<u8>,
    pub created_at: Millis,
}

/// A claimed event.
#[derive(Debug, Clone)]
pub struct EventJob {
    pub id: String,
    pub tenant_id: TenantId,
    pub kind: EventType,
    pub payload: Vec<u8>,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What an event sender asks for in one claim.
#[derive(Debug, Clone)]
pub struct EventClaim {
    pub now: Millis,
    pub owner: String,
    /// How long the lease lasts (on PostgreSQL measured on the database's clock).
    pub lease_ms: Millis,
    pub fair: Fairness<String>,
}

/// How an attempt ended, for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Delivered,
    Retry { due_at: Millis },
    Failed,
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

pub trait IntegrationStore {
    /// Create or replace the tenant's webhook (a replacement keeps the stored secret and
    /// enables a disabled one). `None`: no such tenant; `Some(true)`: created.
    fn put_webhook(&self, id: &TenantId, w: &Webhook) -> Result<Option<bool>, StoreError>;
    fn webhook(&self, id: &TenantId) -> Result<Option<Webhook>, StoreError>;
    /// Remove the webhook and its undelivered events; false when there was none.
    fn delete_webhook(&self, id: &TenantId) -> Result<bool, StoreError>;
    fn set_webhook_secret(
        &self,
        id: &TenantId,
        sealed: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Queue an event, if the tenant still subscribes to its type.
    fn insert_event(&self, e: &NewEvent) -> Result<bool, StoreError>;
    /// Lease due pending events tenant by tenant (see [`Fairness`]), not those of a
    /// disabled webhook; returns them and where the next claim starts.
    fn claim_events(&self, c: &EventClaim) -> Result<(Vec<EventJob>, Option<String>), StoreError>;
    /// An event that cannot be opened yet: due again at `due_at`, no attempt counted (only
    /// while `owner` holds it).
    fn defer_event(&self, event_id: &str, owner: &str, due_at: Millis) -> Result<(), StoreError>;
    /// Give back the leases `owner` holds on events, but those in `keep` (shutdown).
    fn release_events(&self, owner: &str, keep: &[String]) -> Result<usize, StoreError>;
    /// The endpoint at `url` answered 410 Gone: disable the webhook (its pending events
    /// fail) until the tenant stores it again — only while it still points at `url`; false
    /// when there is no such webhook.
    fn disable_webhook(
        &self,
        id: &TenantId,
        url: &str,
        reason: &str,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Record an attempt and its outcome, if `owner` still holds the event's lease.
    #[allow(clippy::too_many_arguments)]
    fn settle_event(
        &self,
        event_id: &str,
        owner: &str,
        attempt: u32,
        outcome: EventOutcome,
        status_code: Option<u16>,
        error: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError>;
    /// The newest delivery attempts of a tenant, newest first.
    fn webhook_deliveries(
        &self,
        id: &TenantId,
        limit: u32,
    ) -> Result<Vec<WebhookAttempt>, StoreError>;
    /// Claim an idempotency key, or say what holds it (one atomic step).
    fn idem_begin(&self, c: &IdemClaim) -> Result<IdemBegin, StoreError>;
    /// Keep the answer of the request that holds the key (`holder`: its claim's token; a
    /// request whose claim was taken over changes nothing).
    fn idem_finish(
        &self,
        id: &TenantId,
        key_digest: &[u8],
        holder: &str,
        status: u16,
        response: &[u8],
    ) -> Result<(), StoreError>;
    /// Free a key whose request got an answer that is not kept (only the holder's claim).
    fn idem_release(
        &self,
        id: &TenantId,
        key_digest: &[u8],
        holder: &str,
    ) -> Result<(), StoreError>;
    /// Delete expired idempotency keys, and settled events and delivery records older than
    /// `records_before`.
    fn purge_integration(&self, now: Millis, records_before: Millis) -> Result<usize, StoreError>;
}

/// Queue `e` if an enabled webhook of its tenant takes its type (inside the caller's
/// transaction); whether it was queued.
pub(crate) fn insert_event_in(tx: &mut dyn Exec, e: &NewEvent) -> Result<bool, StoreError> {
    let row = args![
        e.id.as_str(),
        e.tenant_id.as_str(),
        e.kind.as_str(),
        e.payload.as_slice(),
        e.created_at,
    ];
    Ok(tx.exec(super::sql::integration::INSERT_EVENT, row)? > 0)
}
