//! Codes: mint, verify, resend, status and cancel, claims, links, hosted pages, idempotency and the SMS
//! guard.

pub mod claims;
mod gate;
pub mod hosted;
pub mod idempotency;
pub mod links;
pub mod mint;
mod no_attempt;
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
}
