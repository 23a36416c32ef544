//! Tests of delivery's modes, states, reasons and their advice, and the retry schedule.

use super::*;

#[test]
fn a_busy_relay_is_tried_again_within_seconds_not_minutes() {
    assert_eq!(next_try_at(4, 0, 600_000, 0, false), Some(120_000));
    assert_eq!(next_try_at(4, 0, 600_000, 0, true), Some(BUSY_RETRY_MAX_MS));
    assert_eq!(next_try_at(1, 0, 600_000, 0, true), Some(1_000));
    // A wait the endpoint asked for holds.
    assert_eq!(next_try_at(4, 0, 600_000, 60_000, true), Some(60_000));
    // Nothing left before expiry stays nothing.
    assert_eq!(next_try_at(6, 570_000, 600_000, 0, true), None);
}

#[test]
fn retries_grow_until_a_last_try_before_expiry() {
    assert_eq!(next_attempt_at(1, 0, 600_000, 0), Some(1_000));
    assert_eq!(next_attempt_at(2, 0, 600_000, 0), Some(5_000));
    assert_eq!(next_attempt_at(3, 0, 600_000, 0), Some(30_000));
    assert_eq!(next_attempt_at(4, 0, 600_000, 0), Some(120_000));
    // The schedule's 10 min would come after expiry: one last try 30 s before it.
    assert_eq!(next_attempt_at(5, 156_000, 600_000, 0), Some(570_000));
    // That try failed too: none is left.
    assert_eq!(next_attempt_at(6, 570_000, 600_000, 0), None);
    assert_eq!(next_attempt_at(9, 0, 86_400_000, 0), Some(1_800_000));
    // Short lifetimes keep the schedule's tries, and get no last one.
    assert_eq!(next_attempt_at(1, 0, 10_000, 0), Some(1_000));
    assert_eq!(next_attempt_at(3, 6_000, 10_000, 0), None);
    assert_eq!(next_attempt_at(4, 36_000, 60_000, 0), None);
    assert_eq!(next_attempt_at(4, 36_000, 120_000, 0), Some(90_000));
    assert_eq!(next_attempt_at(1, 10_000, 10_500, 0), None);
    // A Retry-After is honoured: later than the schedule, never sooner than asked.
    assert_eq!(next_attempt_at(1, 0, 600_000, 60_000), Some(60_000));
    assert_eq!(next_attempt_at(4, 36_000, 120_000, 60_000), None);
    assert_eq!(next_attempt_at(4, 36_000, 120_000, 50_000), Some(90_000));
    // A try the schedule puts inside the last 30 s comes at their start instead.
    assert_eq!(next_attempt_at(4, 0, 125_000, 0), Some(95_000));
    assert_eq!(next_attempt_at(4, 0, 150_000, 0), Some(120_000));
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

#[test]
fn a_delivery_record_gives_the_advice_of_its_code_as_a_sync_answer_does() {
    // Found by a black-box re-check: the record of an async send said to check the
    // password where the sync answer said to check token_url.
    let view = |detail_code: Option<&str>| DeliveryView {
        mode: DeliveryMode::Async,
        status: DeliveryStatus::Failed,
        attempts: 1,
        reason: Some("smtp_auth".into()),
        sent_at: None,
        transport: None,
        provider_message_id: None,
        detail_code: detail_code.map(str::to_string),
    };
    assert_eq!(
        view(Some("oauth2_no_token")).advice(),
        Some(DeliveryReason::Auth.advice_with(Some("oauth2_no_token")))
    );
    assert!(view(Some("oauth2_no_token"))
        .advice()
        .unwrap()
        .contains("token_url"));
    assert_eq!(view(None).advice(), Some(DeliveryReason::Auth.advice()));
    assert_eq!(
        DeliveryView {
            reason: Some("expired".into()),
            ..view(None)
        }
        .advice(),
        DeliveryReason::advice_for("expired")
    );
}

/// An unknown outcome says that the message may have arrived, and why nobody knows: no
/// answer came, or the provider's answer did not say it took the whole message (found by the
/// SMS audit: an unreadable or partial answer was said to have never come). Only an accepted
/// message's time and id are its own.
#[test]
fn an_unknown_outcome_says_whether_an_answer_came() {
    let view = |reason: &str| DeliveryView {
        mode: DeliveryMode::Sync,
        status: DeliveryStatus::Unknown,
        attempts: 1,
        reason: Some(reason.into()),
        sent_at: Some(1),
        transport: None,
        provider_message_id: Some("SM1".into()),
        detail_code: None,
    };
    for r in [
        "interrupted",
        "smtp_timeout",
        "provider_unreachable",
        "http_unreachable",
    ] {
        assert_eq!(view(r).advice(), Some(UNKNOWN_OUTCOME_ADVICE), "{r}");
    }
    for r in ["provider_unavailable", "provider_rejected"] {
        assert_eq!(view(r).advice(), Some(UNCLEAR_ANSWER_ADVICE), "{r}");
    }
    assert!(UNCLEAR_ANSWER_ADVICE.contains("may have arrived"));
    assert!(!view("smtp_timeout").accepted());
    for (status, accepted) in [
        (DeliveryStatus::Sent, true),
        (DeliveryStatus::Bounced, true),
        (DeliveryStatus::Queued, false),
        (DeliveryStatus::Failed, false),
    ] {
        let v = DeliveryView {
            status,
            ..view("smtp_timeout")
        };
        assert_eq!(v.accepted(), accepted, "{status:?}");
    }
}

#[test]
fn every_reason_reads_back_with_its_advice() {
    for r in DeliveryReason::ALL {
        assert_eq!(DeliveryReason::advice_for(r.as_str()), Some(r.advice()));
    }
    assert!(DeliveryReason::advice_for("expired").is_some());
    assert!(DeliveryReason::advice_for("not_sent").is_some());
    assert_eq!(DeliveryReason::advice_for("nonsense"), None);
}
