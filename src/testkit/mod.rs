//! Test and benchmark helpers (feature `testkit`): a real SMTP server, a real HTTP(S)
//! endpoint, an OAuth2 token endpoint, fake provider APIs and a TCP proxy that cuts, all on loopback.

pub mod dns;
pub mod http;
mod mime;
pub mod oauth2;
pub mod provider_events;
pub mod providers;
pub mod proxy;
pub mod smtp;
