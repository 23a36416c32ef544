//! What a stored result means, decided once for both backends: which codes a delivered
//! message supersedes, what the sweep does with a message whose code is no longer live, when
//! a given-up send goes back to the quotas, how an event's outcome is stored, and how a
//! code's delivery is shown. The backends hold only the SQL around these decisions.

use super::integration::EventOutcome;
use crate::domain::challenge::{has_attempts_left, live, StoredStatus};
use crate::domain::delivery::{DeliveryMode, DeliveryStatus};
use crate::domain::Millis;

/// Whether an accepted message supersedes the older pending codes of its group. A code that
/// already ended otherwise (expired, exhausted, cancelled, failed, superseded) changes
/// nothing: only a code that is, or just was, the live one of its group takes over.
pub fn accepted_supersedes(status: StoredStatus) -> bool {
    matches!(status, StoredStatus::Pending | StoredStatus::Verified)
}

/// The SQL condition, on a code's row as it was, under which a message given up on fails
/// its code: a pending key none of whose messages was accepted, and that was never resent
/// (a resent key's earlier codes keep verifying until it expires, API.md §13.3; its first
/// message may have arrived even when its delivery shows `unknown`).
pub(crate) const GIVING_UP_FAILS_KEY: &str =
    "status = 'pending' AND sent_at IS NULL AND resends = 0";

/// What the sweep does with an outbox row nobody holds (never leased, or its lease ran out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepVerdict {
    /// A message whose sender died (or lost the database) while it held it — a sync mint's,
    /// or an async one whose send it had begun — and whose lease ran out: the person may have
    /// it, so the code stays as it is (valid until it expires), its send stays counted, it
    /// supersedes nothing, and nobody sends it again by itself (delivery `unknown`, API.md
    /// §19.2; `POST /v1/otp/{key}/resend` remains the way to send again).
    Interrupted,
    /// The code is still pending but expired before its message left: the code fails
    /// (`expired`), its send goes back to the quotas, `otp.delivery_failed` is raised.
    Expired,
    /// The code ended otherwise first (verified, cancelled, exhausted, superseded): the
    /// delivery is given up (`not_sent`), the code keeps its state.
    NotSent,
}

impl SweepVerdict {
    /// The delivery reason recorded.
    pub fn reason(self) -> &'static str {
        match self {
            SweepVerdict::Interrupted => "interrupted",
            SweepVerdict::Expired => "expired",
            SweepVerdict::NotSent => "not_sent",
        }
    }

    /// The delivery status recorded.
    pub fn delivery_status(self) -> DeliveryStatus {
        match self {
            SweepVerdict::Interrupted => DeliveryStatus::Unknown,
            SweepVerdict::Expired | SweepVerdict::NotSent => DeliveryStatus::Failed,
        }
    }

    /// Whether the send goes back to the quotas (never after an interrupted send: it may
    /// have reached the relay).
    pub fn refunds(self, maybe_delivered_before: bool) -> bool {
        self != SweepVerdict::Interrupted && refunds_quota(maybe_delivered_before, false)
    }

    /// Whether the code itself becomes `failed`.
    pub fn fails_code(self) -> bool {
        self == SweepVerdict::Expired
    }
}

/// The sweep's verdict on a row nobody holds, of a code in this state; `None` while an
/// async code is live (a sender will take it). `send_began`: a sender whose lease ran out
/// (it died, or could not record the outcome) had begun the send. One that had not begun it
/// is no send at all: its lease is given back (`OutboxStore::release_unstarted`) and the
/// row is judged like any other nobody holds.
pub fn sweep_verdict(
    mode: DeliveryMode,
    send_began: bool,
    status: StoredStatus,
    attempts: u32,
    max_attempts: u32,
    expires_at: Millis,
    now: Millis,
) -> Option<SweepVerdict> {
    // A sync row is leased from its insert until its sender settles it; an async one from
    // its claim until its sender settles it, retries later or gives it back.
    if mode == DeliveryMode::Sync || send_began {
        return Some(SweepVerdict::Interrupted);
    }
    if live(status, attempts, max_attempts, expires_at, now) {
        None
    } else if has_attempts_left(status, attempts, max_attempts) {
        Some(SweepVerdict::Expired)
    } else {
        Some(SweepVerdict::NotSent)
    }
}

/// How a message given up on is recorded (API.md §19.2): when nobody can know whether this
/// last attempt reached the person (the relay took the body and never answered; a provider
/// timed out after the request went out) its delivery is `unknown`, the code stays valid until it
/// expires and nothing sends it again by itself; otherwise it `failed` and so does its code
/// (see [`GIVING_UP_FAILS_KEY`]). Returns the delivery status and whether the code fails.
pub fn given_up(outcome_unknown: bool) -> (DeliveryStatus, bool) {
    if outcome_unknown {
        (DeliveryStatus::Unknown, false)
    } else {
        (DeliveryStatus::Failed, true)
    }
}

/// Whether giving up on a message gives its send back to the quotas: only when no attempt
/// (an earlier one, or this last one) may have reached the relay.
pub fn refunds_quota(maybe_delivered_before: bool, maybe_delivered_now: bool) -> bool {
    !maybe_delivered_before && !maybe_delivered_now
}

/// How an event's outcome is stored: its status and when it is next due.
pub fn event_row(outcome: EventOutcome, now: Millis) -> (&'static str, Millis) {
    match outcome {
        EventOutcome::Delivered => ("delivered", now),
        EventOutcome::Failed => ("failed", now),
        EventOutcome::Retry { due_at } => ("pending", due_at),
    }
}

/// A code's delivery as shown: the stored column holds queued, sent or failed; a queued
/// message whose outbox row is leased right now, or whose begun send nobody has settled yet,
/// is `sending`.
pub fn shown_delivery(stored: &str, leased: bool) -> Option<DeliveryStatus> {
    match DeliveryStatus::parse_stored(stored)? {
        DeliveryStatus::Queued if leased => Some(DeliveryStatus::Sending),
        s => Some(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StoredStatus::*;

    #[test]
    fn only_the_live_code_of_a_group_supersedes() {
        assert!(accepted_supersedes(Pending));
        assert!(accepted_supersedes(Verified));
        for s in [Superseded, Cancelled, Failed] {
            assert!(!accepted_supersedes(s), "{s:?}");
        }
    }

    #[test]
    fn the_sweep_fails_expired_codes_and_gives_up_on_ended_ones() {
        let a = DeliveryMode::Async;
        assert_eq!(sweep_verdict(a, false, Pending, 0, 5, 100, 99), None);
        assert_eq!(
            sweep_verdict(a, false, Pending, 0, 5, 100, 100),
            Some(SweepVerdict::Expired)
        );
        assert_eq!(
            sweep_verdict(a, false, Pending, 5, 5, 100, 50),
            Some(SweepVerdict::NotSent),
            "exhausted"
        );
        assert_eq!(
            sweep_verdict(a, false, Cancelled, 0, 5, 100, 200),
            Some(SweepVerdict::NotSent)
        );
        assert!(SweepVerdict::Expired.fails_code());
        assert!(!SweepVerdict::NotSent.fails_code());
        assert!(SweepVerdict::Expired.refunds(false));
        assert!(!SweepVerdict::Expired.refunds(true));
    }

    #[test]
    fn an_interrupted_send_keeps_its_code_and_its_count_and_one_never_begun_is_no_send() {
        let v = sweep_verdict(DeliveryMode::Sync, true, Pending, 0, 5, 100, 50);
        assert_eq!(v, Some(SweepVerdict::Interrupted));
        // An async message whose send its sender began and never settled: the same,
        // whatever its code's state (it may have reached the person before the sender died).
        let a = DeliveryMode::Async;
        for (status, attempts, expires_at) in
            [(Pending, 0, 100), (Pending, 0, 40), (Verified, 1, 100)]
        {
            assert_eq!(
                sweep_verdict(a, true, status, attempts, 5, expires_at, 50),
                Some(SweepVerdict::Interrupted)
            );
        }
        // One claimed whose send never began is no send: live, a sender takes it again;
        // ended, it is judged like any other row nobody holds.
        assert_eq!(sweep_verdict(a, false, Pending, 0, 5, 100, 50), None);
        assert_eq!(
            sweep_verdict(a, false, Pending, 0, 5, 40, 50),
            Some(SweepVerdict::Expired)
        );
        assert_eq!(
            sweep_verdict(a, false, Verified, 1, 5, 100, 50),
            Some(SweepVerdict::NotSent)
        );
        let v = SweepVerdict::Interrupted;
        assert!(!v.fails_code());
        assert!(!v.refunds(false));
        assert_eq!(v.delivery_status(), DeliveryStatus::Unknown);
        assert_eq!(v.reason(), "interrupted");
    }

    #[test]
    fn a_send_goes_back_only_when_nothing_may_have_reached_the_relay() {
        assert!(refunds_quota(false, false));
        assert!(!refunds_quota(true, false));
        assert!(!refunds_quota(false, true));
    }

    #[test]
    fn a_leased_queued_message_shows_as_sending() {
        assert_eq!(
            shown_delivery("queued", true),
            Some(DeliveryStatus::Sending)
        );
        assert_eq!(
            shown_delivery("queued", false),
            Some(DeliveryStatus::Queued)
        );
        assert_eq!(shown_delivery("sent", true), Some(DeliveryStatus::Sent));
        assert_eq!(shown_delivery("bogus", false), None);
    }
}
