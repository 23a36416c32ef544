//! A tenant's webhook subscription and the record of its delivery attempts (API.md §9).

use super::event::EventType;
use super::Millis;

/// A tenant's webhook endpoint. `secret` is sealed with the data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    /// Subscribed event types, in the order they were asked (no duplicates).
    pub events: Vec<EventType>,
    pub secret: Vec<u8>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Set when the endpoint answered 410 Gone (API.md §11.7): no events are queued or sent
    /// until the tenant stores the webhook again.
    pub disabled: Option<Disabled>,
}

/// Why and since when a webhook is disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disabled {
    pub at: Millis,
    pub reason: String,
}

impl Webhook {
    /// The subscription as stored: the types' names joined by commas.
    pub fn events_joined(&self) -> String {
        join_events(&self.events)
    }
}

/// Event type names joined by commas (the stored form of a subscription).
pub fn join_events(events: &[EventType]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The subscribable types of a stored comma list (unknown names are left out).
pub fn split_events(s: &str) -> Vec<EventType> {
    s.split(',')
        .filter_map(EventType::parse_subscribable)
        .collect()
}

/// One attempt, as listed by `GET /v1/tenant/webhook/deliveries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    pub event_id: String,
    pub kind: EventType,
    pub attempt: u32,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub at: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_round_trips_through_its_stored_form() {
        let events = vec![EventType::OtpSent, EventType::OtpCancelled];
        assert_eq!(join_events(&events), "otp.sent,otp.cancelled");
        assert_eq!(split_events("otp.sent,otp.cancelled"), events);
        assert_eq!(split_events(""), Vec::<EventType>::new());
        assert_eq!(split_events("otp.sent,bogus"), vec![EventType::OtpSent]);
    }
}
