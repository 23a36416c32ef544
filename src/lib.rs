//! otpmint: a multi-tenant, self-hosted email one-time-password server.

pub mod cli;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod mailer;
pub mod messages;
pub mod metrics;
pub mod net_policy;
pub mod outbound;
pub mod pages;
pub mod routes;
pub mod service;
pub mod startup;
pub mod storage;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
