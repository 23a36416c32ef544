//! The send quotas and failure budget: what they are, and the rules both stores apply when
//! they check and count them inside a mint's (or a guess's) transaction.

use super::StoreError;
use crate::domain::keys::TenantId;
use crate::domain::Millis;

/// Quotas to check and count in one atomic step at mint.
#[derive(Debug, Clone, Copy)]
pub struct SendQuota {
    pub recipient_max: u32,
    pub recipient_window_ms: Millis,
    pub cooldown_ms: Millis,
    pub tenant_max_per_hour: u32,
    pub max_failures: u32,
}

impl SendQuota {
    /// Whether any limit is on (all off: nothing to check or count at mint).
    pub fn any(&self) -> bool {
        self.recipient_max > 0
            || self.cooldown_ms > 0
            || self.tenant_max_per_hour > 0
            || self.max_failures > 0
    }

    /// Only the recipient's failure budget: what a test mint is checked against (it sends
    /// nothing, but a recipient that keeps guessing wrong is refused like any, API.md §17.8).
    pub fn failures_only(&self) -> SendQuota {
        SendQuota {
            recipient_max: 0,
            cooldown_ms: 0,
            tenant_max_per_hour: 0,
            ..*self
        }
    }
}

pub(crate) const HOUR_MS: Millis = 3_600_000;
pub(crate) const MINUTE_MS: Millis = 60_000;

/// The quota rules, on counts a backend read; one place for both backends' arithmetic.
impl SendQuota {
    /// Until when the failure budget is spent, from its stored (failures, window start).
    pub(crate) fn failures_until(
        &self,
        failures: i64,
        start: Millis,
        now: Millis,
    ) -> Option<Millis> {
        let until = start + self.recipient_window_ms;
        (self.max_failures > 0 && failures >= i64::from(self.max_failures) && until > now)
            .then_some(until)
    }

    pub(crate) fn failures_refusal(
        &self,
        failures: i64,
        start: Millis,
        now: Millis,
    ) -> Option<QuotaRefusal> {
        self.failures_until(failures, start, now)
            .map(|until| QuotaRefusal::Failures {
                retry_after_ms: until - now,
            })
    }

    /// From the recipient's last send.
    pub(crate) fn cooldown_refusal(
        &self,
        last: Option<Millis>,
        now: Millis,
    ) -> Option<QuotaRefusal> {
        let next = last? + self.cooldown_ms;
        (self.cooldown_ms > 0 && next > now).then(|| QuotaRefusal::Cooldown {
            retry_after_ms: next - now,
        })
    }

    /// The first sent-after time of the recipient window query.
    pub(crate) fn recipient_window_start(&self, now: Millis) -> Millis {
        now - self.recipient_window_ms
    }

    /// From the recipient's sends in the window and the oldest of them.
    pub(crate) fn recipient_refusal(
        &self,
        count: i64,
        oldest: Option<Millis>,
        now: Millis,
    ) -> Option<QuotaRefusal> {
        (self.recipient_max > 0 && count >= i64::from(self.recipient_max)).then(|| {
            QuotaRefusal::Recipient {
                retry_after_ms: oldest.map_or(self.recipient_window_ms, |o| {
                    o + self.recipient_window_ms - now
                }),
            }
        })
    }

    /// The minutes counted for the tenant's hour: those after this one. Per-minute counters
    /// keep the read at most 61 rows, whatever the tenant's volume.
    pub(crate) fn tenant_minutes_after(now: Millis) -> i64 {
        (now - HOUR_MS).div_euclid(MINUTE_MS)
    }

    /// From the tenant's sends in its hour and the oldest minute that holds any: the
    /// oldest minute stops counting once the window no longer reaches it (minute `m` counts
    /// while `m > (now - hour) / minute`, so until `m * minute + hour`), never more than the
    /// hour itself away (API.md §6.31).
    pub(crate) fn tenant_refusal(
        &self,
        count: i64,
        oldest_minute: Option<i64>,
        now: Millis,
    ) -> Option<QuotaRefusal> {
        (self.tenant_max_per_hour > 0 && count >= i64::from(self.tenant_max_per_hour)).then(|| {
            QuotaRefusal::Tenant {
                retry_after_ms: oldest_minute
                    .map_or(HOUR_MS, |m| m * MINUTE_MS + HOUR_MS - now)
                    .clamp(1, HOUR_MS),
            }
        })
    }
}

impl SendQuota {
    /// The tenant's test sends of the hour (API.md §13.1), counted like its relay sends
    /// (per minute) against their own limit.
    pub(crate) fn test_sends_refusal(
        per_hour: u32,
        count: i64,
        oldest_minute: Option<i64>,
        now: Millis,
    ) -> Option<QuotaRefusal> {
        let q = SendQuota {
            recipient_max: 0,
            recipient_window_ms: 0,
            cooldown_ms: 0,
            tenant_max_per_hour: per_hour,
            max_failures: 0,
        };
        match q.tenant_refusal(count, oldest_minute, now)? {
            QuotaRefusal::Tenant { retry_after_ms } => {
                Some(QuotaRefusal::TestSends { retry_after_ms })
            }
            other => Some(other),
        }
    }
}

pub trait QuotaStore {
    /// Every quota check of a mint, counting nothing (a cheap read before hashing; the
    /// mint's own transaction checks and counts again, atomically).
    fn check_quota(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError>;
    /// Whether the recipient's failure budget is spent (and until when).
    fn failures_blocked(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError>;
}

/// Which quota refused a send, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    Recipient {
        retry_after_ms: Millis,
    },
    Cooldown {
        retry_after_ms: Millis,
    },
    Tenant {
        retry_after_ms: Millis,
    },
    Failures {
        retry_after_ms: Millis,
    },
    /// The tenant's test sends of the hour (`limits.test_sends_per_hour`).
    TestSends {
        retry_after_ms: Millis,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    fn q() -> SendQuota {
        SendQuota {
            recipient_max: 3,
            recipient_window_ms: 600_000,
            cooldown_ms: 30_000,
            tenant_max_per_hour: 100,
            max_failures: 5,
        }
    }

    #[test]
    fn quota_rules_refuse_at_the_limit_and_say_when_to_retry() {
        let (q, now) = (q(), 10_000_000);
        assert_eq!(q.failures_refusal(4, now - 1_000, now), None);
        assert_eq!(
            q.failures_refusal(5, now - 1_000, now),
            Some(QuotaRefusal::Failures {
                retry_after_ms: 599_000
            })
        );
        assert_eq!(
            q.failures_until(5, now - 600_000, now),
            None,
            "the window ended"
        );
        assert_eq!(
            q.cooldown_refusal(Some(now - 10_000), now),
            Some(QuotaRefusal::Cooldown {
                retry_after_ms: 20_000
            })
        );
        assert_eq!(q.cooldown_refusal(Some(now - 30_000), now), None);
        assert_eq!(q.cooldown_refusal(None, now), None);
        assert_eq!(q.recipient_refusal(2, Some(now - 1), now), None);
        assert_eq!(
            q.recipient_refusal(3, Some(now - 100_000), now),
            Some(QuotaRefusal::Recipient {
                retry_after_ms: 500_000
            })
        );
        let minute = now.div_euclid(MINUTE_MS) - 30;
        assert_eq!(
            q.tenant_refusal(100, Some(minute), now),
            Some(QuotaRefusal::Tenant {
                retry_after_ms: minute * MINUTE_MS + HOUR_MS - now
            })
        );
        // The oldest minute counted is at most the current one: never more than an hour.
        for now in [HOUR_MS * 5, HOUR_MS * 5 + 59_999, HOUR_MS * 5 + 30_000] {
            let current = now.div_euclid(MINUTE_MS);
            let Some(QuotaRefusal::Tenant { retry_after_ms }) =
                q.tenant_refusal(100, Some(current), now)
            else {
                panic!("refused")
            };
            assert!((1..=HOUR_MS).contains(&retry_after_ms), "{retry_after_ms}");
            // The first minute still counted.
            let oldest = (now - HOUR_MS).div_euclid(MINUTE_MS) + 1;
            let Some(QuotaRefusal::Tenant { retry_after_ms }) =
                q.tenant_refusal(100, Some(oldest), now)
            else {
                panic!("refused")
            };
            assert!(
                (1..=MINUTE_MS).contains(&retry_after_ms),
                "{retry_after_ms}"
            );
        }
        assert_eq!(q.tenant_refusal(99, Some(minute), now), None);
        let off = SendQuota {
            max_failures: 0,
            cooldown_ms: 0,
            recipient_max: 0,
            tenant_max_per_hour: 0,
            ..q
        };
        assert!(!off.any());
        assert_eq!(off.failures_until(99, now, now), None);
        assert_eq!(off.cooldown_refusal(Some(now), now), None);
        assert_eq!(off.recipient_refusal(99, None, now), None);
        assert_eq!(off.tenant_refusal(99, None, now), None);
    }
}
