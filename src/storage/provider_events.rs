//! Provider events (API.md §16.2): each applied once — recorded by its provider's id, and in
//! the same transaction the recipient suppressed, the matching code's delivery marked
//! `bounced`, the statistics counted and the tenant's webhook event stored.

use super::StoreError;
use crate::domain::event::EventType;
use crate::domain::keys::TenantId;
use crate::domain::stats::Counted;
use crate::domain::suppression::Suppression;
use crate::domain::Millis;
use crate::storage::integration::NewEvent;

/// A verified hard bounce or complaint, with everything it changes.
#[derive(Debug, Clone)]
pub struct EventEffect {
    pub tenant: TenantId,
    /// `postmark`, `resend`, …
    pub provider: String,
    pub event_id: String,
    /// The suppression entry it adds (the recipient canonical).
    pub suppression: Suppression,
    /// The provider's message id, to find the code it was about.
    pub message_id: Option<String>,
    /// `Counted::Bounced` or `Counted::Complained`.
    pub counted: Counted,
    /// The tenant's webhook event, if it subscribes.
    pub webhook: Option<NewEvent>,
    /// The tenant's settings the event was verified with, when they were read before this
    /// request: it is applied only while they still hold.
    pub verified_with: Option<VerifiedWith>,
    pub now: Millis,
}

/// What an event was verified and shaped with: the tenant's row version (every change of
/// its provider settings, its enabled flag or its keys moves it on) and its webhook's event
/// types (which decide whether `otp.bounced` is raised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedWith {
    pub row_version: i64,
    pub webhook_events: String,
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventApplied {
    /// Applied now.
    Applied,
    /// Seen before: nothing changed.
    Seen,
    /// The tenant's settings are no longer what the event was verified with (or it is
    /// disabled or gone): nothing changed.
    Stale,
}

impl EventEffect {
    pub fn event_type(&self) -> EventType {
        match self.counted {
            Counted::Complained => EventType::OtpComplained,
            _ => EventType::OtpBounced,
        }
    }
}

pub trait ProviderEventStore {
    /// Record an event seen (`false`: seen before, nothing changes). For an event that
    /// changes nothing (a soft bounce, a subscription confirmation).
    fn record_provider_event(
        &self,
        tenant: &TenantId,
        provider: &str,
        event_id: &str,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Apply a hard bounce or complaint once, in one transaction that first checks the
    /// tenant's settings are still [`EventEffect::verified_with`] (when given).
    fn apply_provider_event(&self, e: &EventEffect) -> Result<EventApplied, StoreError>;
    /// The first value recorded under `provider` for the tenant (a pinned SNS topic).
    fn provider_pin(&self, tenant: &TenantId, provider: &str)
        -> Result<Option<String>, StoreError>;
    /// Forget events received before `before` (pins are kept).
    fn purge_provider_events(&self, before: Millis) -> Result<usize, StoreError>;
}
