//! Codes: mint, verify, resend, status and cancel, claims, links, hosted pages, idempotency and the SMS
//! guard.

pub mod claims;
mod gate;
pub mod hosted;
mod hosted_verify;
pub mod idempotency;
pub mod links;
pub mod mint;
mod no_attempt;
mod page_guesses;
pub mod resend;
mod send_turn;
mod sms_guard;
pub mod status;
mod turns;
pub mod verify;

use std::sync::Arc;

use crate::service::{Core, Delivery, Events, Tenants};

/// Codes: mint, verify, resend, cancel, claims, links, hosted pages, idempotency and the
/// SMS guard.
#[derive(Clone)]
pub struct Codes {
    pub(crate) core: Arc<Core>,
    pub(crate) tenants: Arc<Tenants>,
    pub(crate) delivery: Arc<Delivery>,
    pub(crate) events: Arc<Events>,
    /// The verifies of each key under way in this process (a verify that finds no attempt
    /// left waits for them before it says why).
    pub(crate) turns: Arc<turns::KeyTurns>,
    /// The hosted sessions whose code is being sent in this process (one send of a session
    /// at a time: a double click does not mint twice).
    pub(crate) sends: Arc<turns::KeyTurns>,
    /// The last wrong code typed on each hosted page, as a keyed digest: the same form posted
    /// again spends no second attempt.
    pub(crate) page_guesses: Arc<page_guesses::PageGuesses>,
    /// The idempotency keys this process's mints hold (settled at a stop that cuts them).
    pub(crate) in_flight: Arc<idempotency::InFlight>,
}

/// The audit outcome of a mint or a resend that was refused or failed: why, in the words the
/// documentation gives (`delivery_failed:<reason>`, `rate_limited:<limit>`,
/// `blocked:<reason>`), else the problem's code (`recipient_suppressed`, …).
pub(crate) fn refusal_outcome(e: &crate::service::ServiceError) -> String {
    use crate::service::ServiceError as E;
    match e {
        E::Delivery(r, _) => format!("delivery_failed:{}", r.as_str()),
        E::RateLimited { kind, .. } => format!("rate_limited:{}", kind.as_str()),
        E::SmsCountryNotAllowed(_) => "blocked:country_not_allowed".into(),
        E::PhoneNumberNotAllowed(_) => "blocked:number_not_allowed".into(),
        E::SmsVelocity { .. } => "blocked:velocity".into(),
        e => e.code().as_str().to_string(),
    }
}
