//! Challenge: the stored state of one code and the rules that read its status at a given time.

use super::delivery::DeliveryView;
use super::named::named_enum;
use super::Millis;

named_enum! {
    /// What the store keeps in its `status` column. A code is stored before its message leaves
    /// (store first, send second); `Failed` is a code whose message never got accepted: it can
    /// never verify.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum StoredStatus {
        Pending = "pending",
        Verified = "verified",
        Superseded = "superseded",
        Cancelled = "cancelled",
        Failed = "failed",
    }
}

named_enum! {
    /// The status a client sees, derived from the stored one and the time.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Status {
        Pending = "pending",
        Verified = "verified",
        Expired = "expired",
        Exhausted = "exhausted",
        Superseded = "superseded",
        Cancelled = "cancelled",
        Failed = "failed",
    }
}

named_enum! {
    /// How a code was verified (API.md §14.2): its code typed in, or its magic link followed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum VerifiedVia {
        Code = "code",
        Link = "link",
    }
}

/// A challenge as read back from the store (never with its hash).
#[derive(Debug, Clone)]
pub struct ChallengeView {
    pub status: StoredStatus,
    pub email: String,
    pub email_canonical: String,
    pub purpose: super::purpose::Purpose,
    pub attempts: u32,
    pub max_attempts: u32,
    pub code_length: u32,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub verified_at: Option<Millis>,
    pub delivery: DeliveryView,
    /// New codes sent under this key since its mint (API.md §13.3).
    pub resends: u32,
    /// Minted for a test recipient or by a test tenant: its messages went to the test inbox.
    pub test: bool,
    /// The locale its message was written in (`None`: imported from OtpMint).
    pub locale: Option<super::locale::Locale>,
    pub channel: super::recipient::Channel,
    /// How it was verified (API.md §14.2).
    pub verified_via: Option<VerifiedVia>,
    /// The PKCE challenge its outcome is claimed with (API.md §17.2).
    pub code_challenge: Option<super::claim::CodeChallenge>,
    /// When its outcome was claimed (once).
    pub claimed_at: Option<Millis>,
    /// When its last attempt was taken.
    pub attempt_at: Option<Millis>,
    /// How many of its taken attempts are still being compared (their verifies' outcome
    /// not in yet), on any instance.
    pub attempts_open: u32,
}

/// A stored pending code with attempts left: it may still be verified until it expires.
pub fn has_attempts_left(status: StoredStatus, attempts: u32, max_attempts: u32) -> bool {
    status == StoredStatus::Pending && attempts < max_attempts
}

/// The live-code rule: pending, unexpired at `now`, with attempts left. Only a live code
/// may be verified, sent, resent, superseded or cancelled; the store writes the same rule
/// in SQL (`storage::sql::live_code!`).
pub fn live(
    status: StoredStatus,
    attempts: u32,
    max_attempts: u32,
    expires_at: Millis,
    now: Millis,
) -> bool {
    has_attempts_left(status, attempts, max_attempts) && now < expires_at
}

impl ChallengeView {
    pub fn status_at(&self, now: Millis) -> Status {
        match self.status {
            StoredStatus::Verified => Status::Verified,
            StoredStatus::Superseded => Status::Superseded,
            StoredStatus::Cancelled => Status::Cancelled,
            StoredStatus::Failed => Status::Failed,
            StoredStatus::Pending => {
                if !has_attempts_left(self.status, self.attempts, self.max_attempts) {
                    Status::Exhausted
                } else if live(
                    self.status,
                    self.attempts,
                    self.max_attempts,
                    self.expires_at,
                    now,
                ) {
                    Status::Pending
                } else {
                    Status::Expired
                }
            }
        }
    }

    pub fn attempts_remaining(&self) -> u32 {
        self.max_attempts.saturating_sub(self.attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::delivery::{DeliveryMode, DeliveryStatus};

    #[test]
    fn a_code_is_live_while_pending_unexpired_and_with_attempts_left() {
        assert!(live(StoredStatus::Pending, 2, 3, 1000, 999));
        assert!(
            !live(StoredStatus::Pending, 2, 3, 1000, 1000),
            "a code expires at its expiry instant"
        );
        assert!(
            !live(StoredStatus::Pending, 3, 3, 1000, 0),
            "no attempts left"
        );
        assert!(!live(StoredStatus::Verified, 0, 3, 1000, 0));
        assert!(has_attempts_left(StoredStatus::Pending, 3, 4));
        assert!(!has_attempts_left(StoredStatus::Superseded, 0, 4));
    }

    fn view(status: StoredStatus, attempts: u32) -> ChallengeView {
        ChallengeView {
            status,
            email: "a@b.co".into(),
            email_canonical: "a@b.co".into(),
            purpose: crate::domain::purpose::Purpose::from_stored("default".into()),
            attempts,
            max_attempts: 3,
            code_length: 6,
            created_at: 0,
            expires_at: 1000,
            verified_at: None,
            delivery: DeliveryView {
                mode: DeliveryMode::Sync,
                status: DeliveryStatus::Sent,
                attempts: 1,
                reason: None,
                sent_at: Some(0),
                transport: None,
                provider_message_id: None,
                detail_code: None,
            },
            resends: 0,
            test: false,
            locale: None,
            channel: crate::domain::recipient::Channel::Email,
            verified_via: None,
            code_challenge: None,
            claimed_at: None,
            attempt_at: None,
            attempts_open: 0,
        }
    }

    #[test]
    fn pending_becomes_expired_at_expiry_and_exhausted_at_the_limit() {
        // (stored, attempts used, when, status then)
        for (stored, used, at, want) in [
            (StoredStatus::Pending, 0, 999, Status::Pending),
            (StoredStatus::Pending, 0, 1000, Status::Expired),
            (StoredStatus::Pending, 3, 10, Status::Exhausted),
            (StoredStatus::Pending, 3, 5000, Status::Exhausted),
            (StoredStatus::Verified, 1, 5000, Status::Verified),
        ] {
            assert_eq!(
                view(stored, used).status_at(at),
                want,
                "{stored:?} {used} {at}"
            );
        }
        assert_eq!(view(StoredStatus::Pending, 2).attempts_remaining(), 1);
    }
}
