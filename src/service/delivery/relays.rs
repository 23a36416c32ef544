//! A tenant's transports (API.md §12): its relay, an optional fallback relay and an optional
//! HTTP endpoint (first, instead of the relay, or last), each SMTP relay with its own
//! session window and pool, and a circuit breaker per transport and process. After
//! `delivery.breaker_failures` transient failures in a row a relay is skipped for
//! `delivery.breaker_seconds` while another relay can take the message; then one message
//! probes it (the others keep skipping it until the probe's outcome). A relay that answers —
//! even with a permanent refusal — closes its breaker. With no other relay to go to, an
//! open relay is tried all the same: skipping it would only fail the message sooner.

use std::collections::HashMap;
use std::sync::Mutex;

pub use crate::domain::recipient::Channel;
use crate::domain::tenant::{HttpTransport, HttpUse, SmtpAccount, Tenant};
use crate::domain::Millis;
use crate::service::tenants::sealed_as;

/// The transport that accepted a message (`delivery.transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Smtp,
    SmtpFallback,
    Http,
}

/// How a route sends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Way<'a> {
    Smtp {
        account: &'a SmtpAccount,
        fallback: bool,
    },
    Http(&'a HttpTransport),
}

/// One transport a message may take, with its breaker's key.
#[derive(Debug)]
pub(crate) struct Route<'a> {
    pub transport: Transport,
    pub way: Way<'a>,
    pub key: String,
}

/// The transports a message takes, in order: a text message only the HTTP endpoint; an
/// email the endpoint first when it is the primary transport (then the fallback relay),
/// else the relay, the fallback relay and the endpoint when it is the fallback.
pub(crate) fn routes(tenant: &Tenant, channel: Channel) -> Vec<Route<'_>> {
    let id = &tenant.id;
    let smtp = Route {
        transport: Transport::Smtp,
        way: Way::Smtp {
            account: &tenant.smtp,
            fallback: false,
        },
        key: sealed_as(id, false),
    };
    let fallback = tenant.smtp_fallback.as_ref().map(|account| Route {
        transport: Transport::SmtpFallback,
        way: Way::Smtp {
            account,
            fallback: true,
        },
        key: sealed_as(id, true),
    });
    let http = tenant.http.as_ref().map(|h| Route {
        transport: Transport::Http,
        way: Way::Http(h),
        key: format!("{}/http", id.as_str()),
    });
    match (channel, tenant.http.as_ref().map(|h| h.use_as)) {
        (Channel::Sms, _) => http.into_iter().collect(),
        (Channel::Email, Some(HttpUse::Primary)) => http.into_iter().chain(fallback).collect(),
        (Channel::Email, _) => std::iter::once(smtp).chain(fallback).chain(http).collect(),
    }
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Smtp => "smtp",
            Transport::SmtpFallback => "smtp_fallback",
            Transport::Http => "http",
        }
    }
}

/// Whether a relay takes messages now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Closed: it does.
    Closed,
    /// Open, and its time is up: this message is its probe.
    Probe,
    /// Open: skip it if another relay can take the message.
    Open,
}

#[derive(Debug, Default)]
struct Breaker {
    /// Transient failures in a row.
    failures: u32,
    /// Open until then (`None`: closed).
    open_until: Option<Millis>,
    /// A probe is under way.
    probing: bool,
}

/// The breakers of this process, by relay (the pool key of its target).
#[derive(Debug, Default)]
pub(crate) struct Breakers {
    by_relay: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    fn locked(&self) -> std::sync::MutexGuard<'_, HashMap<String, Breaker>> {
        self.by_relay.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The relay's gate now, without taking its probe.
    pub fn peek(&self, relay: &str, now: Millis) -> Gate {
        match self.locked().get(relay) {
            Some(Breaker {
                open_until: Some(until),
                probing,
                ..
            }) => {
                if now >= *until && !probing {
                    Gate::Probe
                } else {
                    Gate::Open
                }
            }
            _ => Gate::Closed,
        }
    }

    /// The relay's gate now; a `Probe` answer makes this caller its probe (report the
    /// outcome with `passed` or `failed`, or `let_go` if nothing was sent).
    pub fn admit(&self, relay: &str, now: Millis) -> Gate {
        let mut map = self.locked();
        let Some(b) = map.get_mut(relay) else {
            return Gate::Closed;
        };
        match b.open_until {
            None => Gate::Closed,
            Some(until) if now >= until && !b.probing => {
                b.probing = true;
                Gate::Probe
            }
            Some(_) => Gate::Open,
        }
    }

    /// The relay answered (accepted, or refused for good): its breaker closes.
    pub fn passed(&self, relay: &str) {
        self.locked().remove(relay);
    }

    /// A transient failure: one more in a row; the breaker opens at `threshold` (a failed
    /// probe opens it again at once).
    pub fn failed(&self, relay: &str, now: Millis, threshold: u32, open_ms: Millis) {
        let mut map = self.locked();
        let b = map.entry(relay.to_string()).or_default();
        b.failures = b.failures.saturating_add(1);
        if b.probing || b.failures >= threshold.max(1) {
            b.open_until = Some(now.saturating_add(open_ms));
        }
        b.probing = false;
    }

    /// A probe that sent nothing (shutting down): the next message probes instead.
    pub fn let_go(&self, relay: &str) {
        if let Some(b) = self.locked().get_mut(relay) {
            b.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breaker_opens_after_the_threshold_and_one_probe_closes_or_reopens_it() {
        let b = Breakers::default();
        for _ in 0..4 {
            b.failed("r", 0, 5, 30_000);
            assert_eq!(b.peek("r", 0), Gate::Closed);
        }
        b.failed("r", 1_000, 5, 30_000);
        assert_eq!(b.admit("r", 1_000), Gate::Open);
        assert_eq!(b.admit("r", 30_999), Gate::Open);
        // Its time is up: one probe, the others still skip it.
        assert_eq!(b.peek("r", 31_000), Gate::Probe);
        assert_eq!(b.admit("r", 31_000), Gate::Probe);
        assert_eq!(b.admit("r", 31_000), Gate::Open);
        assert_eq!(b.peek("r", 31_000), Gate::Open);
        // A failed probe opens it again for the whole time.
        b.failed("r", 32_000, 5, 30_000);
        assert_eq!(b.admit("r", 61_999), Gate::Open);
        assert_eq!(b.admit("r", 62_000), Gate::Probe);
        b.passed("r");
        assert_eq!(b.admit("r", 62_000), Gate::Closed);
        // A success in between resets the count.
        for _ in 0..4 {
            b.failed("r", 0, 5, 30_000);
        }
        b.passed("r");
        b.failed("r", 0, 5, 30_000);
        assert_eq!(b.peek("r", 0), Gate::Closed);
        // A probe let go lets the next message probe.
        for _ in 0..5 {
            b.failed("s", 0, 5, 10);
        }
        assert_eq!(b.admit("s", 10), Gate::Probe);
        b.let_go("s");
        assert_eq!(b.admit("s", 10), Gate::Probe);
        // Other relays are not affected.
        assert_eq!(b.peek("t", 0), Gate::Closed);
    }
}
