//! Test and benchmark helpers (feature `testkit`): a real SMTP server, a real HTTP(S)
//! endpoint, an OAuth2 token endpoint and fake provider APIs, all on loopback.

pub mod dns;
pub mod http;
mod mime;
pub mod oauth2;
pub mod provider_events;
pub mod providers;
pub mod smtp;
