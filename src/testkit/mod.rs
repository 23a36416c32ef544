//! Test and benchmark helpers (feature `testkit`): a real SMTP server on loopback.

pub mod smtp;
