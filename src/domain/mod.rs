//! Pure domain types and rules: no I/O, no async, no clock of its own.

pub mod audit;
pub mod challenge;
pub mod claim;
pub mod code;
pub mod delivery;
pub mod dkim;
pub mod email;
pub mod event;
pub mod keys;
pub mod links;
pub mod locale;
pub mod oauth2;
pub mod policy;
pub mod provider;
pub mod provider_event;
pub mod purpose;
pub mod recipient;
pub mod sms_guard;
pub mod stats;
pub mod suppression;
pub mod template;
pub mod tenant;
pub mod test_mode;
pub mod webhook;

/// Milliseconds since the Unix epoch; the one time unit of the domain and the store.
pub type Millis = i64;
