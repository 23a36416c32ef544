//! Delivery of a code's message: the mode a mint asked for, the states of its outbox work, and
//! the retry schedule for transient failures. Pure: times are passed in.

use super::Millis;

/// How a mint waits for its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// The answer waits for the relay: 201 once it accepted the message, 502 otherwise.
    Sync,
    /// The answer (202) comes once the code and its message are stored; a sender delivers it.
    Async,
}

impl DeliveryMode {
    pub fn parse(s: &str) -> Option<DeliveryMode> {
        match s {
            "sync" => Some(DeliveryMode::Sync),
            "async" => Some(DeliveryMode::Async),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Sync => "sync",
            DeliveryMode::Async => "async",
        }
    }
}

/// Why a delivery failed: the `reason` clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryReason {
    HostNotAllowed,
    Unreachable,
    Timeout,
    Tls,
    Auth,
    Rejected,
    /// The HTTP endpoint refused the message for good (a 4xx other than 408 and 429, or a
    /// redirect, which is not followed).
    HttpRejected,
    /// The HTTP endpoint answered 408, 429 or 5xx.
    HttpUnavailable,
    /// No answer from the HTTP endpoint (connection, TLS, timeout).
    HttpUnreachable,
    /// The HTTP endpoint's host is not allowed by the address policy.
    HttpHostNotAllowed,
    /// A text message, and the tenant has no HTTP transport (any more).
    ChannelNotConfigured,
}

impl DeliveryReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryReason::HostNotAllowed => "smtp_host_not_allowed",
            DeliveryReason::Unreachable => "smtp_unreachable",
            DeliveryReason::Timeout => "smtp_timeout",
            DeliveryReason::Tls => "smtp_tls",
            DeliveryReason::Auth => "smtp_auth",
            DeliveryReason::Rejected => "smtp_rejected",
            DeliveryReason::HttpRejected => "http_rejected",
            DeliveryReason::HttpUnavailable => "http_unavailable",
            DeliveryReason::HttpUnreachable => "http_unreachable",
            DeliveryReason::HttpHostNotAllowed => "http_host_not_allowed",
            DeliveryReason::ChannelNotConfigured => "channel_not_configured",
        }
    }
}

/// Where a code's message is: stored and waiting, being sent, accepted, given up — or
/// `Unknown`: a sync send whose process died while the message was in flight (the person may
/// have it; it is never sent again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Queued,
    Sending,
    Sent,
    Failed,
    Unknown,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Unknown => "unknown",
        }
    }
    /// The stored column holds queued, sent, failed or unknown; `sending` is a queued
    /// message whose outbox row is leased right now.
    pub fn parse_stored(s: &str) -> Option<DeliveryStatus> {
        match s {
            "queued" => Some(DeliveryStatus::Queued),
            "sent" => Some(DeliveryStatus::Sent),
            "failed" => Some(DeliveryStatus::Failed),
            "unknown" => Some(DeliveryStatus::Unknown),
            _ => None,
        }
    }
}

/// A code's delivery as `GET /v1/otp/{key}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    pub mode: DeliveryMode,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// The last failure's reason (`smtp_*`, `expired`, or `not_sent` for a code that ended
    /// before its message left).
    pub reason: Option<String>,
    pub sent_at: Option<Millis>,
    /// The transport that accepted its last message: `smtp`, `smtp_fallback` or `http`.
    pub transport: Option<String>,
}

/// Delays after the 1st, 2nd, … failed attempt: about 1 s, 5 s, 30 s, 2 min, 10 min, then
/// every 30 min. Retries stop when the code expires.
const RETRY_DELAYS_MS: &[Millis] = &[1_000, 5_000, 30_000, 120_000, 600_000, 1_800_000];

/// When to try again after `attempts` failed attempts, or `None` when the next try would
/// come at or after `expires_at` (the delivery then fails as expired).
pub fn next_attempt_at(attempts: u32, now: Millis, expires_at: Millis) -> Option<Millis> {
    let i = (attempts.max(1) as usize - 1).min(RETRY_DELAYS_MS.len() - 1);
    let at = now.saturating_add(RETRY_DELAYS_MS[i]);
    (at < expires_at).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_grow_and_stop_at_expiry() {
        assert_eq!(next_attempt_at(1, 0, 600_000), Some(1_000));
        assert_eq!(next_attempt_at(2, 0, 600_000), Some(5_000));
        assert_eq!(next_attempt_at(3, 0, 600_000), Some(30_000));
        assert_eq!(next_attempt_at(4, 0, 600_000), Some(120_000));
        assert_eq!(next_attempt_at(5, 0, 600_000), None);
        assert_eq!(next_attempt_at(9, 0, 86_400_000), Some(1_800_000));
        assert_eq!(next_attempt_at(1, 10_000, 10_500), None);
    }

    #[test]
    fn modes_and_statuses_round_trip() {
        for m in [DeliveryMode::Sync, DeliveryMode::Async] {
            assert_eq!(DeliveryMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(DeliveryMode::parse("later"), None);
        assert_eq!(DeliveryStatus::parse_stored("sending"), None);
        assert_eq!(
            DeliveryStatus::parse_stored("failed"),
            Some(DeliveryStatus::Failed)
        );
    }
}
