//! Bounce and complaint events from a tenant's email provider (API.md §16.2): verified with
//! the material of its provider settings, then each applied once — the recipient
//! suppressed, the code's delivery marked `bounced`, statistics and `otp.bounced` /
//! `otp.complained`. SES events arrive through SNS (`sns.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::email::RecipientEmail;
use crate::domain::keys::TenantId;
use crate::domain::provider::ProviderKind;
use crate::domain::provider_event::{
    stored_id, verify_and_parse, EventKeys, EventKind, Header, ProviderEvent, Refused,
};
use crate::domain::recipient::Channel;
use crate::domain::stats::Counted;
use crate::domain::suppression::{Suppression, SuppressionReason};
use crate::service::core::audit::RequestContext;
use crate::service::events::webhooks::EventData;
use crate::service::{Events, ServiceError};
use crate::storage::provider_events::{EventApplied, VerifiedWith};
use crate::storage::{EventEffect, SeenEvent};

pub(super) fn refused(r: Refused) -> ServiceError {
    match r {
        Refused::Unverified => ServiceError::EventUnverified,
        Refused::Malformed(why) => ServiceError::EventMalformed(why),
    }
}

/// Tenants whose event settings are kept at most; beyond it the cache starts over.
const SETTINGS_KEPT: usize = 4096;

/// A tenant's event verification material as read for an earlier request.
struct EventSettings {
    kind: ProviderKind,
    keys: EventKeys,
    verified_with: VerifiedWith,
}

/// Each tenant's event settings as last read, for the providers whose events verify without
/// a write of their own (Resend, SendGrid, Postmark). An event verified with them is applied
/// only if, in its own transaction, the tenant's row version and webhook subscription are
/// still what was read; otherwise nothing changes, the settings are read again and the
/// event is verified anew. An event they do not verify is checked against the stored
/// settings before it is refused. Saves a store round trip per event (docs/benchmarks.md,
/// "Provider events beside mints").
#[derive(Clone, Default)]
pub struct EventSettingsCache {
    inner: Arc<Mutex<HashMap<String, Arc<EventSettings>>>>,
}

impl EventSettingsCache {
    fn get(&self, tenant: &TenantId) -> Option<Arc<EventSettings>> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.get(tenant.as_str()).cloned()
    }

    fn put(&self, tenant: &TenantId, s: EventSettings) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= SETTINGS_KEPT {
            m.clear();
        }
        m.insert(tenant.as_str().to_string(), Arc::new(s));
    }

    fn forget(&self, tenant: &TenantId) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(tenant.as_str());
    }
}

/// Whether a provider's events verify without a write of their own (Mailgun records each
/// token; SES fetches certificates and asks STS for the account once).
fn settings_kept(kind: ProviderKind) -> bool {
    matches!(
        kind,
        ProviderKind::Resend | ProviderKind::Sendgrid | ProviderKind::Postmark
    )
}

/// Whether applying an event writes (a hard bounce or complaint of an address).
fn changes_something(e: &ProviderEvent) -> bool {
    matches!(e.kind, EventKind::HardBounce | EventKind::Complaint)
        && RecipientEmail::parse(&e.recipient).is_ok()
}

/// What holds a verified request of events to changing things once, beyond each event's
/// own id.
enum Guard<'a> {
    /// Nothing more: its signature covers its events (and its settings were read now).
    None,
    /// The settings it was verified with, read for an earlier request, must still hold.
    Settings(&'a VerifiedWith),
    /// Its signature's one-time token (Mailgun), taken with the first event that changes
    /// something, or alone when none does.
    Token(Option<SeenEvent>),
}

/// What a request of events did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EventsApplied {
    /// Events in the request.
    pub received: usize,
    /// Hard bounces and complaints applied now (not seen before).
    pub applied: usize,
}

impl Events {
    /// Receive a provider's request of events for a tenant.
    pub async fn receive_provider_events(
        &self,
        provider: &str,
        tenant_id: &str,
        header: Header<'_>,
        body: &[u8],
        ctx: &RequestContext,
    ) -> Result<EventsApplied, ServiceError> {
        let kind = ProviderKind::parse(provider)
            .filter(|k| k.channel() == Channel::Email)
            .ok_or(ServiceError::NoEventsProvider)?;
        let id = TenantId::parse(tenant_id).ok_or(ServiceError::TenantNotFound)?;
        let now = self.core.now();
        // First with the settings read for an earlier request, while they still hold.
        let mut applied_before = 0;
        if let Some(known) = self.event_settings.get(&id).filter(|k| k.kind == kind) {
            // Only an event that changes something checks, in its own transaction, that the
            // settings still hold: a request of none is answered from the stored settings.
            if let Some(events) = verify_and_parse(kind, &known.keys, header, body, now / 1000)
                .ok()
                .filter(|events| events.iter().any(changes_something))
            {
                let w = &known.verified_with;
                let (done, stale) = self
                    .apply_events(
                        &id,
                        &w.webhook_events,
                        Guard::Settings(w),
                        kind,
                        events,
                        (now, ctx),
                    )
                    .await?;
                if !stale {
                    return Ok(done);
                }
                applied_before = done.applied;
                self.event_settings.forget(&id);
            }
        }
        let tenant = self.core.tenant(tenant_id).await?;
        if !tenant.enabled {
            return Err(ServiceError::TenantNotFound);
        }
        // The tenant's email provider holds the verification material: another kind's
        // events cannot verify.
        let Some(p) = tenant.provider(Channel::Email).filter(|p| p.kind == kind) else {
            return Err(ServiceError::EventUnverified);
        };
        let mut guard = Guard::None;
        let events = if kind == ProviderKind::Ses {
            match self.verified_sns(&tenant, p, body).await? {
                Some(events) => events,
                None => return Ok(EventsApplied::default()),
            }
        } else {
            let secrets = self.core.open_provider_secrets(&tenant.id, p).await?;
            let keys = EventKeys {
                secret: secrets.get("events_secret").cloned(),
                public_key: p.setting("events_public_key").map(str::to_string),
                username: p.setting("events_username").map(str::to_string),
                password: secrets.get("events_password").cloned(),
            };
            let events =
                verify_and_parse(kind, &keys, header, body, now / 1000).map_err(refused)?;
            if settings_kept(kind) {
                self.event_settings.put(
                    &tenant.id,
                    EventSettings {
                        kind,
                        keys,
                        verified_with: VerifiedWith {
                            row_version: tenant.row_version,
                            webhook_events: tenant.webhook_events.clone(),
                        },
                    },
                );
            }
            // Mailgun signs only its timestamp and token, not the event: a token is taken
            // once — with the first event that changes something, in its transaction, or
            // alone — so a captured signature carries no other event. (Mailgun posts one
            // event a request, and its parser reads one: a token taken with a first event
            // could otherwise leave a later one's failed write unretried.)
            if kind == ProviderKind::Mailgun {
                let token = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.pointer("/signature/token")?.as_str().map(str::to_string))
                    .unwrap_or_default();
                guard = Guard::Token(Some(SeenEvent {
                    tenant: tenant.id.clone(),
                    provider: crate::storage::provider_events::MAILGUN_TOKEN.into(),
                    event_id: stored_id(&token, 200),
                    now,
                }));
            }
            events
        };
        let w = &tenant.webhook_events;
        let (mut done, _) = self
            .apply_events(&tenant.id, w, guard, kind, events, (now, ctx))
            .await?;
        done.applied += applied_before;
        Ok(done)
    }

    /// Apply each event in turn; the second value is true when one found the settings it
    /// was verified with gone stale (it and those after it changed nothing).
    async fn apply_events(
        &self,
        tenant: &TenantId,
        webhook_events: &str,
        mut guard: Guard<'_>,
        kind: ProviderKind,
        events: Vec<ProviderEvent>,
        at: (i64, &RequestContext),
    ) -> Result<(EventsApplied, bool), ServiceError> {
        let mut done = EventsApplied {
            received: events.len(),
            applied: 0,
        };
        for e in events {
            match self
                .apply_event(tenant, webhook_events, &mut guard, kind, e, at)
                .await?
            {
                EventApplied::Applied { .. } => done.applied += 1,
                EventApplied::Seen => {}
                EventApplied::Replayed => return Ok((done, false)),
                EventApplied::Stale => return Ok((done, true)),
            }
        }
        // No event changed anything: the token is taken all the same.
        if let Guard::Token(Some(token)) = guard {
            self.core
                .write(move |s| s.record_provider_event(&token))
                .await?;
        }
        Ok((done, false))
    }

    /// Apply one event: a hard bounce or complaint once; anything else changes nothing.
    async fn apply_event(
        &self,
        tenant: &TenantId,
        webhook_events: &str,
        guard: &mut Guard<'_>,
        kind: ProviderKind,
        e: ProviderEvent,
        (now, ctx): (i64, &RequestContext),
    ) -> Result<EventApplied, ServiceError> {
        // A soft bounce or anything else changes nothing; an address the provider names that
        // is no address is no one to suppress.
        let (reason, counted) = match e.kind {
            EventKind::HardBounce => (SuppressionReason::HardBounce, Counted::Bounced),
            EventKind::Complaint => (SuppressionReason::Complaint, Counted::Complained),
            EventKind::SoftBounce | EventKind::Other => return Ok(EventApplied::Seen),
        };
        let Ok(addr) = RecipientEmail::parse(&e.recipient) else {
            return Ok(EventApplied::Seen);
        };
        let recipient = addr.canonical().to_string();
        // Its place in the audit trail, before it changes anything (as a suppression added
        // over the API takes one).
        let audit = self.core.audit.slot()?;
        let mut effect = EventEffect {
            seen: SeenEvent {
                tenant: tenant.clone(),
                provider: kind.as_str().to_string(),
                event_id: stored_id(&e.id, 200),
                now,
            },
            suppression: Suppression {
                recipient: recipient.clone(),
                reason,
                source: kind.as_str().to_string(),
                created_at: now,
            },
            message_id: e.message_id.map(|m| stored_id(&m, 300)),
            counted,
            webhook: None,
            verified_with: match guard {
                Guard::Settings(w) => Some((*w).clone()),
                _ => None,
            },
            token: match guard {
                Guard::Token(t) => t.take(),
                _ => None,
            },
        };
        effect.webhook = self.event_for(
            tenant,
            Some(webhook_events),
            effect.event_type(),
            EventData {
                shareable_key: "",
                recipient: &recipient,
                channel: Channel::Email,
                purpose: "",
                locale: None,
                reason: Some(reason.as_str()),
            },
        );
        let raised = effect.webhook.is_some();
        let applied = self
            .core
            .write(move |s| s.apply_provider_event(&effect))
            .await?;
        if let EventApplied::Applied { added } = applied {
            // As a suppression added over the API: `exists` when the entry was there.
            let outcome = if added { reason.as_str() } else { "exists" };
            audit.record(tenant, now, "suppression.add", &recipient, outcome, ctx);
            crate::metrics::inc(|m| &m.provider_events, &[kind.as_str(), reason.as_str()]);
            if raised {
                self.wake_hooks();
            }
        }
        Ok(applied)
    }

    pub(super) fn http_timeout(&self) -> Duration {
        Duration::from_secs(self.core.settings.load().delivery.http_timeout_seconds)
    }
}
