//! A tenant's transports (API.md §12): its relay, an optional fallback relay and an optional
//! HTTP endpoint (first, instead of the relay, or last), tried in order for one attempt;
//! each has its own adaptive window (sessions, or requests in flight to the endpoint) and a
//! circuit breaker per transport and process. After
//! `delivery.breaker_failures` transient failures in a row a relay is skipped for
//! `delivery.breaker_seconds` while another relay can take the message; then one message
//! probes it (the others keep skipping it until the probe's outcome). A relay that answers —
//! even with a permanent refusal — closes its breaker. With no other relay to go to, an
//! open relay is tried all the same: skipping it would only fail the message sooner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::attempt::{Relay, Undelivered};
use super::window::{RelayWindow, Slot, Ticket};
use super::{Services, StoredMessage};
use crate::domain::delivery::{DeliveryMode, DeliveryReason};
use crate::mailer::DeliveryError;
use crate::service::transport_http::HttpMessage;
use crate::storage::OutboxJob;

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

/// The failure of a send that waited in this process's queue for a session and got none.
const NO_SESSION: &str = "no session of the transport was free in time";
/// The failure of a relay whose sealed password cannot be read here.
const UNREADABLE: &str = "the relay's password cannot be decrypted";

/// How a route sends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Way<'a> {
    Smtp {
        account: &'a SmtpAccount,
        fallback: bool,
    },
    Http(&'a HttpTransport),
}

/// One transport a message may take, with the key of its window and breaker.
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
        // The primary transport's window is the tenant's (what claims count by); as the
        // fallback the endpoint has its own.
        key: match h.use_as {
            HttpUse::Primary => id.as_str().to_string(),
            HttpUse::Fallback => format!("{}/http", id.as_str()),
        },
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

    /// Forget the breakers of a tenant's transports (its settings changed).
    pub fn forget(&self, tenant: &str) {
        let own = format!("{tenant}/");
        self.locked()
            .retain(|k, _| k != tenant && !k.starts_with(&own));
    }

    /// A probe that sent nothing (shutting down): the next message probes instead.
    pub fn let_go(&self, relay: &str) {
        if let Some(b) = self.locked().get_mut(relay) {
            b.probing = false;
        }
    }
}

impl Services {
    /// Send through the tenant's transports in order (API.md §12): a transient failure that
    /// sent nothing goes on to the next one at once, within the same deadline (the first
    /// transport's: `smtp.timeout_seconds` or `delivery.http_timeout_seconds`); a transport
    /// whose breaker is open is skipped while another can take the message. `ticket`: a
    /// place already queued in the primary relay's window.
    pub(super) async fn send_via_relays(
        &self,
        job: &OutboxJob,
        tenant: &Tenant,
        msg: &StoredMessage,
        ticket: Option<Ticket>,
    ) -> Result<Transport, Undelivered> {
        let breakers = self.outbox.breakers();
        let cfg = self.settings.load().delivery.clone();
        let http_timeout = std::time::Duration::from_secs(cfg.http_timeout_seconds);
        let channel = msg.channel();
        let routes = routes(tenant, channel);
        if routes.is_empty() {
            // A text message whose tenant removed its HTTP transport since the mint.
            return Err(Undelivered::Failed(DeliveryError {
                reason: DeliveryReason::ChannelNotConfigured,
                detail: "no transport takes this channel".into(),
                maybe_delivered: false,
                transient: false,
                refused: false,
                retry_after: None,
            }));
        }
        let now = self.now();
        // Every transport resting: try them all the same (skipping would only fail sooner).
        let all_open = routes
            .iter()
            .all(|r| breakers.peek(&r.key, now) == Gate::Open);
        // The sender queued the message in the tenant's window (the first route's). Unless
        // that route takes it, the place is held until the attempt ends, so the sender's
        // next claim still counts this message.
        let mut held = ticket;
        // The whole attempt's deadline: the first route tried sets it.
        let mut deadline: Option<Instant> = None;
        let mut asked: Option<std::time::Duration> = None;
        let mut last: Option<DeliveryError> = None;
        for (i, route) in routes.iter().enumerate() {
            let ticket = if i == 0 && route.key == tenant.id.as_str() {
                held.take()
            } else {
                None
            };
            let gate = if all_open {
                Gate::Closed
            } else {
                breakers.admit(&route.key, now)
            };
            if gate == Gate::Open {
                tracing::debug!(tenant_id = %tenant.id, transport = route.transport.as_str(), "the transport's breaker is open; skipped");
                held = held.or(ticket);
                continue;
            }
            let deadline = *deadline.get_or_insert_with(|| {
                Instant::now()
                    + match route.way {
                        Way::Http(_) => http_timeout,
                        Way::Smtp { .. } => self.mailer.timeout(),
                    }
            });
            // Another transport waits behind this one: one that hangs gets half the time left.
            let more = routes[i + 1..]
                .iter()
                .any(|r| all_open || breakers.peek(&r.key, now) != Gate::Open);
            let setup_by = more.then(|| {
                let left = deadline.saturating_duration_since(Instant::now());
                Instant::now() + left / 2
            });
            let sent = match route.way {
                Way::Smtp { account, fallback } => {
                    match self.relay_target(tenant, account, fallback).await {
                        Ok(target) => {
                            let relay = Relay {
                                key: &route.key,
                                account,
                                version: tenant.smtp_version,
                            };
                            self.deliver(
                                job,
                                tenant,
                                &relay,
                                &target,
                                msg,
                                ticket,
                                (deadline, setup_by),
                            )
                            .await
                        }
                        Err(e) => {
                            tracing::error!(tenant_id = %tenant.id, transport = route.transport.as_str(), error = %e, "a relay's SMTP password cannot be decrypted");
                            Err(Undelivered::Failed(DeliveryError {
                                reason: DeliveryReason::Auth,
                                detail: UNREADABLE.into(),
                                maybe_delivered: false,
                                transient: false,
                                refused: false,
                                retry_after: None,
                            }))
                        }
                    }
                }
                Way::Http(h) => {
                    // Requests in flight to the endpoint adapt like a relay's sessions.
                    let window = self.relay_window(
                        &route.key,
                        tenant.smtp_version,
                        tenant.smtp.max_connections,
                    );
                    let by = setup_by.unwrap_or(deadline);
                    match self.session(job, &window, ticket, by).await {
                        Err(u) => Err(u),
                        Ok(slot) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            let m = HttpMessage {
                                channel: channel.as_str(),
                                job,
                                msg,
                            };
                            let sent = self.send_http(tenant, h, &m, left.min(http_timeout)).await;
                            match &sent {
                                Ok(()) => slot.accepted(),
                                // Too many requests, or unavailable: fewer at once.
                                Err(e) if e.reason == DeliveryReason::HttpUnavailable => {
                                    slot.refused();
                                }
                                Err(_) => {}
                            }
                            sent.map_err(Undelivered::Failed)
                        }
                    }
                }
            };
            match sent {
                Ok(()) => {
                    breakers.passed(&route.key);
                    return Ok(route.transport);
                }
                Err(Undelivered::Stopped) => {
                    if gate == Gate::Probe {
                        breakers.let_go(&route.key);
                    }
                    return Err(Undelivered::Stopped);
                }
                Err(Undelivered::Failed(e)) => {
                    // A wait in this process's own queue says nothing of the transport; an
                    // answer, even a refusal for good, says it is up.
                    if e.detail == NO_SESSION {
                        if gate == Gate::Probe {
                            breakers.let_go(&route.key);
                        }
                    } else if e.transient {
                        let open_ms = (cfg.breaker_seconds as i64).saturating_mul(1000);
                        breakers.failed(&route.key, self.now(), cfg.breaker_failures, open_ms);
                    } else {
                        breakers.passed(&route.key);
                    }
                    asked = asked.max(e.retry_after);
                    // A relay whose password cannot be read is unusable here: the next one
                    // tries. Otherwise only a transient failure that sent nothing moves on.
                    let unusable = e.detail == UNREADABLE;
                    let go_on = (e.transient || unusable)
                        && !e.maybe_delivered
                        && Instant::now() < deadline;
                    if more && go_on {
                        tracing::warn!(tenant_id = %tenant.id, transport = route.transport.as_str(), reason = e.reason.as_str(), detail = %e.detail, "a transport failed; the message goes to the next one");
                    }
                    last = Some(e);
                    if !go_on {
                        break;
                    }
                }
            }
        }
        drop(held);
        let mut e = last.unwrap_or_else(|| DeliveryError {
            reason: DeliveryReason::Unreachable,
            detail: "every transport is resting after failures".into(),
            maybe_delivered: false,
            transient: true,
            refused: false,
            retry_after: None,
        });
        // The longest wait any endpoint asked for holds for the next try.
        e.retry_after = e.retry_after.max(asked);
        Err(Undelivered::Failed(e))
    }

    /// A session of the window (the ticket's place, or a new one) by `by`, the message then
    /// held by this process; a background send gives its turn up when the process stops.
    pub(super) async fn session(
        &self,
        job: &OutboxJob,
        window: &Arc<RelayWindow>,
        ticket: Option<Ticket>,
        by: Instant,
    ) -> Result<Slot, Undelivered> {
        let queued = ticket.unwrap_or_else(|| window.queue());
        let session = tokio::time::timeout_at(by, queued.session());
        let slot = if job.mode == DeliveryMode::Async {
            tokio::select! {
                s = session => s,
                _ = self.outbox.until_stopped() => return Err(Undelivered::Stopped),
            }
        } else {
            session.await
        };
        let Ok(slot) = slot else {
            return Err(Undelivered::Failed(DeliveryError {
                reason: DeliveryReason::Timeout,
                detail: NO_SESSION.into(),
                maybe_delivered: false,
                transient: true,
                refused: false,
                retry_after: None,
            }));
        };
        self.outbox
            .hold(&job.key_digest, job.tenant_id.as_str(), job.expires_at);
        Ok(slot)
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
