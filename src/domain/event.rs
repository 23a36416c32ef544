//! The webhook event types (API.md §10).

use super::named::named_enum;
use std::fmt;

named_enum! {
    /// What a webhook event reports.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum EventType {
        OtpSent = "otp.sent",
        OtpDeliveryFailed = "otp.delivery_failed",
        OtpVerified = "otp.verified",
        OtpAttemptsExhausted = "otp.attempts_exhausted",
        OtpCancelled = "otp.cancelled",
        /// A test recipient's fixed code ran out of its failure budget (API.md §17.3).
        TestRecipientDisabled = "test_recipient.disabled",
        /// The SMS fraud guard refused a mint (API.md §17.1).
        OtpBlocked = "otp.blocked",
        /// A provider reported a hard bounce (API.md §16.2).
        OtpBounced = "otp.bounced",
        /// A provider reported a spam complaint.
        OtpComplained = "otp.complained",
        /// Sent by `POST /v1/tenant/webhook/test`, whatever the subscription.
        WebhookTest = "webhook.test",
    }
}

impl EventType {
    /// The types a webhook may subscribe to, in their canonical order.
    pub const SUBSCRIBABLE: [EventType; 9] = [
        EventType::OtpSent,
        EventType::OtpDeliveryFailed,
        EventType::OtpVerified,
        EventType::OtpAttemptsExhausted,
        EventType::OtpCancelled,
        EventType::TestRecipientDisabled,
        EventType::OtpBlocked,
        EventType::OtpBounced,
        EventType::OtpComplained,
    ];

    /// A type a webhook may subscribe to (`webhook.test` is not one).
    pub fn parse_subscribable(s: &str) -> Option<EventType> {
        EventType::SUBSCRIBABLE
            .into_iter()
            .find(|t| t.as_str() == s)
    }

    /// The subscribable names, for error messages.
    pub fn subscribable_list() -> String {
        EventType::SUBSCRIBABLE.map(EventType::as_str).join(", ")
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribable_types_parse_and_the_test_event_does_not() {
        for t in EventType::SUBSCRIBABLE {
            assert_eq!(EventType::parse_subscribable(t.as_str()), Some(t));
        }
        for bad in ["webhook.test", "otp.Sent", "otp.*", "", "otp.sent "] {
            assert_eq!(EventType::parse_subscribable(bad), None, "{bad:?}");
        }
        assert_eq!(
            EventType::subscribable_list(),
            "otp.sent, otp.delivery_failed, otp.verified, otp.attempts_exhausted, otp.cancelled, test_recipient.disabled, otp.blocked, otp.bounced, otp.complained"
        );
    }
}
