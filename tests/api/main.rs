//! Integration tests: the real HTTP server, a real SMTP server over TCP, a temp database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abuse;
mod audit;
mod binary;
mod binary_reload;
mod browser;
mod claims;
mod cli;
mod clients;
mod compat;
mod container;
mod delivery;
mod devx;
mod devx_budget;
mod devx_stats;
mod dkim;
mod hardening;
mod helpers;
mod holds;
mod hosted;
mod hosted_forms;
mod hosted_sends;
mod http_transport;
mod idempotency;
mod import;
mod late_writes;
mod lifecycle;
mod links;
mod oauth2;
mod oauth2_rotation;
mod ops;
mod otp;
mod outbox;
mod outbox_bound;
mod provider_events;
mod provider_events_holds;
mod providers;
mod sms;
mod sms_guard;
mod smtp;
mod suppressions;
mod templates;
mod tenants;
mod tools;
mod transports;
mod webhooks;

/// `tests/api_postgres` builds these modules again against PostgreSQL: it must list every one
/// of them (a module left out would silently run on SQLite only), but for those named here
/// with the reason.
#[test]
fn the_postgres_suite_builds_every_module_of_this_one() {
    const SQLITE_ONLY: &[(&str, &str)] = &[
        (
            "browser",
            "drives Chromium through the pages; what the pages store is tested on PostgreSQL by hosted and links",
        ),
        (
            "clients",
            "runs the client libraries' own suites, which test the clients, not the store",
        ),
        (
            "container",
            "builds and runs the image, which stores in SQLite on its volume by default",
        ),
    ];
    let modules = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("mod "))
            .map(|m| m.trim_end_matches(';').trim().to_string())
            .collect()
    };
    let here = modules(include_str!("main.rs"));
    let there = modules(include_str!("../api_postgres/main.rs"));
    for m in &here {
        let excused = SQLITE_ONLY.iter().any(|(name, _)| name == m);
        assert!(
            there.contains(m) || excused,
            "tests/api_postgres/main.rs does not build `{m}`"
        );
    }
    assert!(here.len() > 20, "{here:?}");
}
