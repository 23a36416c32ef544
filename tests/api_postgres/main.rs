//! The integration suite of tests/api again, with every server on PostgreSQL: each test in a
//! fresh database on the server named by `OTPMINT_TEST_POSTGRES_URL` (`.ci/run` sets it to
//! the local server). Without it the suite is not built and one ignored test says so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(otpmint_pg_tests)]
#[path = "../api/abuse.rs"]
mod abuse;
#[cfg(otpmint_pg_tests)]
#[path = "../api/audit.rs"]
mod audit;
#[cfg(otpmint_pg_tests)]
#[path = "../api/binary.rs"]
mod binary;
#[cfg(otpmint_pg_tests)]
#[path = "../api/binary_reload.rs"]
mod binary_reload;
#[cfg(otpmint_pg_tests)]
#[path = "../api/claims.rs"]
mod claims;
#[cfg(otpmint_pg_tests)]
#[path = "../api/cli.rs"]
mod cli;
#[cfg(otpmint_pg_tests)]
#[path = "../api/compat.rs"]
mod compat;
#[cfg(otpmint_pg_tests)]
#[path = "../api/delivery.rs"]
mod delivery;
#[cfg(otpmint_pg_tests)]
#[path = "../api/devx.rs"]
mod devx;
#[cfg(otpmint_pg_tests)]
#[path = "../api/devx_budget.rs"]
mod devx_budget;
#[cfg(otpmint_pg_tests)]
#[path = "../api/devx_stats.rs"]
mod devx_stats;
#[cfg(otpmint_pg_tests)]
#[path = "../api/dkim.rs"]
mod dkim;
#[cfg(otpmint_pg_tests)]
#[path = "../api/hardening.rs"]
mod hardening;
#[cfg(otpmint_pg_tests)]
#[path = "../api/helpers.rs"]
mod helpers;
#[cfg(otpmint_pg_tests)]
#[path = "../api/holds.rs"]
mod holds;
#[cfg(otpmint_pg_tests)]
#[path = "../api/hosted.rs"]
mod hosted;
#[cfg(otpmint_pg_tests)]
#[path = "../api/hosted_forms.rs"]
mod hosted_forms;
#[cfg(otpmint_pg_tests)]
#[path = "../api/hosted_sends.rs"]
mod hosted_sends;
#[cfg(otpmint_pg_tests)]
#[path = "../api/http_transport.rs"]
mod http_transport;
#[cfg(otpmint_pg_tests)]
#[path = "../api/idempotency.rs"]
mod idempotency;
#[cfg(otpmint_pg_tests)]
#[path = "../api/import.rs"]
mod import;
#[cfg(otpmint_pg_tests)]
#[path = "../api/late_writes.rs"]
mod late_writes;
#[cfg(otpmint_pg_tests)]
#[path = "../api/lifecycle.rs"]
mod lifecycle;
#[cfg(otpmint_pg_tests)]
#[path = "../api/links.rs"]
mod links;
#[cfg(otpmint_pg_tests)]
#[path = "../api/oauth2.rs"]
mod oauth2;
#[cfg(otpmint_pg_tests)]
#[path = "../api/oauth2_rotation.rs"]
mod oauth2_rotation;
#[cfg(otpmint_pg_tests)]
#[path = "../api/ops.rs"]
mod ops;
#[cfg(otpmint_pg_tests)]
#[path = "../api/otp.rs"]
mod otp;
#[cfg(otpmint_pg_tests)]
#[path = "../api/outbox.rs"]
mod outbox;
#[cfg(otpmint_pg_tests)]
#[path = "../api/outbox_bound.rs"]
mod outbox_bound;
#[cfg(otpmint_pg_tests)]
#[path = "../api/provider_events.rs"]
mod provider_events;
#[cfg(otpmint_pg_tests)]
#[path = "../api/provider_events_holds.rs"]
mod provider_events_holds;
#[cfg(otpmint_pg_tests)]
#[path = "../api/providers.rs"]
mod providers;
#[cfg(otpmint_pg_tests)]
#[path = "../api/sms.rs"]
mod sms;
#[cfg(otpmint_pg_tests)]
#[path = "../api/sms_guard.rs"]
mod sms_guard;
#[cfg(otpmint_pg_tests)]
#[path = "../api/smtp.rs"]
mod smtp;
#[cfg(otpmint_pg_tests)]
#[path = "../api/suppressions.rs"]
mod suppressions;
#[cfg(otpmint_pg_tests)]
#[path = "../api/templates.rs"]
mod templates;
#[cfg(otpmint_pg_tests)]
#[path = "../api/tenants.rs"]
mod tenants;
#[cfg(otpmint_pg_tests)]
#[path = "../api/tools.rs"]
mod tools;
#[cfg(otpmint_pg_tests)]
#[path = "../api/transports.rs"]
mod transports;
#[cfg(otpmint_pg_tests)]
#[path = "../api/webhooks.rs"]
mod webhooks;

#[cfg(not(otpmint_pg_tests))]
#[test]
#[ignore = "SKIPPED: the PostgreSQL backend is not tested; set OTPMINT_TEST_POSTGRES_URL (e.g. postgres://root@127.0.0.1:5432/postgres) to run the suite on it"]
fn postgres_backend() {}
#[cfg(otpmint_pg_tests)]
mod bounds;
#[cfg(otpmint_pg_tests)]
mod database_tls;
#[cfg(otpmint_pg_tests)]
mod outages;
#[cfg(otpmint_pg_tests)]
mod scale;
#[cfg(otpmint_pg_tests)]
mod scale_processes;
#[cfg(otpmint_pg_tests)]
mod start;
#[cfg(otpmint_pg_tests)]
mod transports_scale;
