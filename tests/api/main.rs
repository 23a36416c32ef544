//! Integration tests: the real HTTP server, a real SMTP server over TCP, a temp database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abuse;
mod binary;
mod browser;
mod compat;
mod delivery;
mod devx;
mod hardening;
mod helpers;
mod holds;
mod hosted;
mod http_transport;
mod idempotency;
mod import;
mod lifecycle;
mod links;
mod oauth2;
mod ops;
mod otp;
mod outbox;
mod providers;
mod sms;
mod smtp;
mod templates;
mod tenants;
mod transports;
mod webhooks;
