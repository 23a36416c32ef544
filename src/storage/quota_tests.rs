//! Tests of the send quotas' rules: refusals at the limit, when to retry, the longest of several.

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
fn of_several_refusals_the_one_that_holds_longest_answers() {
    let cooldown = QuotaRefusal::Cooldown {
        retry_after_ms: 10_000,
    };
    let window = QuotaRefusal::Recipient {
        retry_after_ms: 40_000,
    };
    assert_eq!(
        QuotaRefusal::longest([None, Some(cooldown), Some(window)]),
        Some(window)
    );
    assert_eq!(
        QuotaRefusal::longest([Some(window), None, Some(cooldown)]),
        Some(window)
    );
    assert_eq!(
        QuotaRefusal::longest([None, Some(cooldown)]),
        Some(cooldown)
    );
    assert_eq!(QuotaRefusal::longest::<2>([None, None]), None);
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
    // A send counted by a request that read the clock a moment after this one: the
    // wait is never longer than the limit's own window (API.md §6.31).
    assert_eq!(
        q.cooldown_refusal(Some(now + 400), now),
        Some(QuotaRefusal::Cooldown {
            retry_after_ms: 30_000
        })
    );
    assert_eq!(
        q.recipient_refusal(3, Some(now + 400), now),
        Some(QuotaRefusal::Recipient {
            retry_after_ms: 600_000
        })
    );
    assert_eq!(
        q.failures_refusal(5, now + 400, now),
        Some(QuotaRefusal::Failures {
            retry_after_ms: 600_000
        })
    );
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
