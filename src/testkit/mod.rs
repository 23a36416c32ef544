//! Test and benchmark helpers (feature `testkit`): a real SMTP server and a real HTTP(S)
//! endpoint on loopback.

pub mod http;
mod mime;
pub mod smtp;
