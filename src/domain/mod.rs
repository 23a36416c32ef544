//! Pure domain types and rules: no I/O, no async, no clock of its own.

pub mod audit;
pub mod challenge;
pub mod claim;
pub mod code;
pub mod delivery;
pub mod dkim;
pub mod email;
pub mod event;
pub mod grammar;
pub mod keys;
pub mod links;
pub mod locale;
pub(crate) mod named;
pub mod numbering;
pub mod oauth2;
pub mod policy;
pub mod provider;
pub mod provider_event;
pub mod public_suffix;
pub mod purpose;
pub mod recipient;
pub mod sender;
pub mod sms_guard;
pub mod sns;
pub mod stats;
pub mod suppression;
pub mod template;
pub mod tenant;
pub mod test_mode;
pub mod webhook;

/// A DNS name as stored — lower case, no trailing dot, at least two labels of letters,
/// digits and inner hyphens — if `s` is one (provider domains, DKIM domains).
pub fn dns_name(s: &str) -> Option<String> {
    if !grammar::DNS_NAME.matches(s) {
        return None;
    }
    let d = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    (d.len() <= 253).then_some(d)
}

/// Milliseconds since the Unix epoch; the one time unit of the domain and the store.
pub type Millis = i64;

/// `at` cut to the whole second it falls in. Times are shown in whole seconds (RFC 3339,
/// API.md §1), so an end that is shown is stored so: a code never verifies after the
/// `expires_at` its answer shows, not even within that second.
pub fn whole_second(at: Millis) -> Millis {
    at - at.rem_euclid(1000)
}
