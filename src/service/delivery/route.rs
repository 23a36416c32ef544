//! One attempt's route (API.md §12, §15.3): the transports of the message's channel, tried
//! in order; each has its own adaptive window (sessions, or requests in flight) and a
//! circuit breaker per transport and process (`breakers.rs`): one whose breaker is open is
//! skipped while another relay can take the message. With no other relay to go to, an
//! open relay is tried all the same: skipping it would only fail the message sooner.

use std::sync::Arc;

use tokio::time::{Duration, Instant};

use super::attempt::Undelivered;
use super::breakers::{Gate, Opening};
use super::transport::{route, Accepted, Deadline, Outbound, Transport};
use super::window::{RelayWindow, Slot, Ticket};
use super::{Delivery, StoredMessage};
use crate::domain::delivery::{DeliveryError, DeliveryMode, DeliveryReason, FailureKind};
use crate::domain::tenant::Tenant;
use crate::mailer::BeforeBody;
use crate::storage::OutboxJob;

pub use crate::domain::recipient::Channel;

/// Sessions one message tries when the relay keeps turning them away while its window
/// shrinks.
const REFUSED_TRIES: u32 = 4;

/// A sync send's first pause once the relay keeps answering it is busy (doubling to 16
/// times this).
const REFUSED_PAUSE: Duration = Duration::from_millis(100);

/// The time a try after such a pause must still have, to connect and send.
const MIN_TRY: Duration = Duration::from_secs(1);
/// A sync send that waited for its place begins only with at least this share (1/n) of
/// its transport's time left.
const SYNC_FLOOR_SHARE: u32 = 4;

/// Writes of a background send's beginning at most, and the pause between them.
const MARK_TRIES: u32 = 3;
const MARK_PAUSE: Duration = Duration::from_millis(100);

/// A queued message's mark of its send's beginning (API.md §19.2), written under its lease
/// just before the message leaves — after SMTP's DATA go-ahead, before an HTTP request: a
/// lease that runs out before it is a message never sent, which the sweep gives back to the
/// queue; after it, an interrupted send, recorded `unknown`. The write is idempotent: one
/// whose answer was lost (it may have committed) is made again, so that a lease whose mark
/// is gone is never left to run out as an interrupted send that never began. Not
/// recorded, not sent.
struct Begin<'a> {
    delivery: &'a Delivery,
    key: &'a [u8],
    tenant: &'a str,
}

impl BeforeBody for Begin<'_> {
    fn ready(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let mut tries = 0;
            loop {
                tries += 1;
                let (key, owner) = (self.key.to_vec(), self.delivery.outbox.owner().to_string());
                match self
                    .delivery
                    .core
                    .write(move |s| s.outbox_send_started(&key, &owner))
                    .await
                {
                    Ok(true) => return true,
                    Ok(false) => {
                        tracing::warn!(tenant_id = %self.tenant, "a queued message's lease was given back or taken over before its send began; not sent here");
                        return false;
                    }
                    Err(e) if tries >= MARK_TRIES => {
                        tracing::warn!(tenant_id = %self.tenant, error = %e, "recording a send's beginning failed; the message goes back to the queue");
                        return false;
                    }
                    Err(_) => tokio::time::sleep(MARK_PAUSE).await,
                }
            }
        })
    }
}

/// What accepted a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The transport's name (`delivery.transport`).
    pub transport: String,
    pub accepted: Accepted,
}

impl Delivery {
    /// Send through the tenant's transports of the message's channel in order (API.md §12,
    /// §15.3): a transient failure that sent nothing goes on to the next one at once, within
    /// the same deadline (the first transport's); a transport whose breaker is open is
    /// skipped while another can take the message. `ticket`: a place already queued in the
    /// primary transport's window.
    pub(super) async fn send_via_route(
        &self,
        job: &OutboxJob,
        tenant: &Tenant,
        msg: &StoredMessage,
        ticket: Option<Ticket>,
    ) -> Result<Delivered, Undelivered> {
        let breakers = self.outbox.breakers();
        let cfg = self.core.settings.load().delivery.clone();
        let channel = msg.channel();
        let routes = route(tenant, channel);
        if routes.is_empty() {
            // The channel's transports were removed since the mint.
            return Err(Undelivered::Failed(DeliveryError::permanent(
                DeliveryReason::ChannelNotConfigured,
                "no transport takes this channel",
            )));
        }
        let begin = Begin {
            delivery: self,
            key: &job.key_digest,
            tenant: job.tenant_id.as_str(),
        };
        let out = Outbound {
            tenant,
            to: &job.recipient,
            msg,
            channel,
            expires_at: job.expires_at,
            begin: (job.mode == DeliveryMode::Async).then_some(&begin as &dyn BeforeBody),
        };
        let now = self.core.now();
        // Every transport resting: try them all the same (skipping would only fail sooner).
        let all_open = routes
            .iter()
            .all(|r| breakers.peek(r.key(), now) == Gate::Open);
        // The sender queued the message in the window of the channel's first route. Unless
        // that route takes it, the place is held until the attempt ends, so the sender's
        // next claim still counts this message.
        let mut held = ticket;
        // The whole attempt's deadline: the first route tried sets it. A background
        // message's waits for a place move it on (they are the queue's time, not the
        // send's), so a transport behind a hanging one keeps its share — by that time at
        // most once, so the attempt stays within its lease (`Delivery::lease`).
        let mut deadline: Option<(Instant, std::time::Duration)> = None;
        let mut waited = std::time::Duration::ZERO;
        let mut asked: Option<std::time::Duration> = None;
        let mut last: Option<DeliveryError> = None;
        // Whether any transport got further than the wait for a session.
        let mut tried = false;
        for (i, transport) in routes.iter().enumerate() {
            let key = transport.key();
            let gate = if all_open {
                Gate::Closed
            } else {
                breakers.admit(key, now)
            };
            // The last transport, with none tried yet, goes ahead whatever its breaker says:
            // another message may have taken the probe that `all_open` counted on between
            // the two reads, and skipping every transport would only fail sooner.
            let last_chance = i + 1 == routes.len() && last.is_none();
            if gate == Gate::Open && !last_chance {
                tracing::debug!(tenant_id = %tenant.id, transport = %transport.name(), "the transport's breaker is open; skipped");
                continue;
            }
            let (base, span) = *deadline.get_or_insert_with(|| {
                let span = transport.timeout(self);
                (Instant::now() + span, span)
            });
            let deadline = base + waited.min(span);
            // Another transport waits behind this one: one that hangs gets half the time left.
            let more = routes[i + 1..]
                .iter()
                .any(|r| all_open || breakers.peek(r.key(), now) != Gate::Open);
            let setup_by = more.then(|| {
                let left = deadline.saturating_duration_since(Instant::now());
                Instant::now() + left / 2
            });
            let window = self.relay_window(key, tenant.smtp_version, transport.ceiling());
            // The queued place is this transport's when the sender queued in its window.
            let ticket = held.take_if(|t| t.is_of(&window));
            let sent = self
                .through(
                    job,
                    transport.as_ref(),
                    &out,
                    (&window, ticket),
                    Deadline {
                        by: deadline,
                        setup_by,
                    },
                    &mut waited,
                )
                .await;
            match sent {
                Ok(accepted) => {
                    if breakers.passed(key) && routes.len() > 1 {
                        tracing::info!(tenant_id = %tenant.id, transport = %transport.name(), "the transport answered again: its breaker closed");
                    }
                    return Ok(Delivered {
                        transport: transport.name(),
                        accepted,
                    });
                }
                Err(u @ (Undelivered::Stopped | Undelivered::NotBegun)) => {
                    if gate == Gate::Probe {
                        breakers.let_go(key);
                    }
                    return Err(u);
                }
                Err(Undelivered::Failed(e) | Undelivered::NoRoom(e)) => {
                    tried |= e.kind != FailureKind::NoSession;
                    // A wait in this process's own queue, or credentials not readable here,
                    // says nothing of the transport; an answer, even a refusal for good, says
                    // it is up.
                    match e.kind {
                        FailureKind::NoSession | FailureKind::Unusable => {
                            if gate == Gate::Probe {
                                breakers.let_go(key);
                            }
                        }
                        _ if e.is_transient() => {
                            let open_ms = (cfg.breaker_seconds as i64).saturating_mul(1000);
                            let probe = gate == Gate::Probe;
                            let threshold = cfg.breaker_failures;
                            // Once an outage: a failed probe (every breaker_seconds while it
                            // lasts) is a debug line.
                            match breakers.failed(key, self.core.now(), threshold, open_ms, probe) {
                                // A lone transport is tried whatever its breaker says: its
                                // breaker changes nothing, and each failure is its own line.
                                Opening::Opened if routes.len() < 2 => {
                                    tracing::debug!(tenant_id = %tenant.id, transport = %transport.name(), "the breaker of a transport with nothing to fall back to opened")
                                }
                                Opening::Opened => {
                                    tracing::warn!(tenant_id = %tenant.id, transport = %transport.name(), reason = e.reason.as_str(), open_seconds = cfg.breaker_seconds, "the transport failed too often in a row: its breaker opened, and the next transport takes its messages meanwhile")
                                }
                                Opening::Reopened => {
                                    tracing::debug!(tenant_id = %tenant.id, transport = %transport.name(), reason = e.reason.as_str(), "the breaker's probe failed: open again")
                                }
                                Opening::None => {}
                            }
                        }
                        _ => {
                            if breakers.passed(key) && routes.len() > 1 {
                                tracing::info!(tenant_id = %tenant.id, transport = %transport.name(), "the transport answered again: its breaker closed");
                            }
                        }
                    }
                    asked = asked.max(e.retry_after);
                    // A transport that cannot be used here (its credentials cannot be read)
                    // leaves the message to the next one; otherwise only a transient failure
                    // that sent nothing moves on.
                    let go_on = (e.is_transient() || e.kind == FailureKind::Unusable)
                        && !e.maybe_delivered
                        && Instant::now() < base + waited.min(span);
                    if more && go_on {
                        tracing::warn!(tenant_id = %tenant.id, transport = %transport.name(), reason = e.reason.as_str(), detail = %e.detail, "a transport failed; the message goes to the next one");
                    }
                    last = Some(e);
                    if !go_on {
                        break;
                    }
                }
            }
        }
        drop(held);
        let mut e = last.unwrap_or_else(|| {
            DeliveryError::transient(
                DeliveryReason::Unreachable,
                "every transport is resting after failures",
            )
        });
        // The longest wait any endpoint asked for holds for the next try.
        e.retry_after = e.retry_after.max(asked);
        if !tried && e.kind == FailureKind::NoSession {
            return Err(Undelivered::NoRoom(e));
        }
        Err(Undelivered::Failed(e))
    }

    /// Send through one transport on a session of its window, within the attempt's
    /// deadline (the wait for a session counts; with another transport waiting, the session
    /// must be ready by `setup_by`). A session turned away shrinks the window and the
    /// message goes on another one while that is worth it; an answer asking for fewer
    /// requests shrinks it too.
    async fn through(
        &self,
        job: &OutboxJob,
        transport: &dyn Transport,
        out: &Outbound<'_>,
        (window, ticket): (&Arc<RelayWindow>, Option<Ticket>),
        deadline: Deadline,
        waited: &mut std::time::Duration,
    ) -> Result<Accepted, Undelivered> {
        if let Some(e) = transport.refused_at_once() {
            return Err(Undelivered::Failed(e));
        }
        let setup_by = deadline.setup_by.unwrap_or(deadline.by);
        let entered = Instant::now();
        let mut ticket = ticket;
        let mut tries = 0;
        // The relay's last refusal: when no other session comes in time, it is the failure
        // (the relay was reached), not a wait for room.
        let mut refusal: Option<DeliveryError> = None;
        loop {
            let asked_at = Instant::now();
            let slot = match self.session(job, window, ticket.take(), setup_by).await {
                Ok(slot) => slot,
                Err(Undelivered::Failed(e)) if e.kind == FailureKind::NoSession => {
                    return Err(Undelivered::Failed(refusal.take().unwrap_or(e)));
                }
                Err(other) => return Err(other),
            };
            let sessions = window.limit() as usize;
            // The wait for a place was the queue's, not the send's: a background message
            // holding its session has its transport's whole time, so it never starts DATA
            // with a moment left and ends `unknown` (API.md §19.3). A sync one's client is
            // waiting: its deadline stands.
            let deadline = match job.mode {
                DeliveryMode::Async => {
                    *waited += asked_at.elapsed();
                    deadline.restarted(transport.timeout(self))
                }
                DeliveryMode::Sync => {
                    // A sync send whose waits here (for a place, or a refused session and
                    // the next) ate its time does not begin with a moment left, to end
                    // `unknown`: like a place not found in time, it sent nothing (502). One
                    // that came here short already (a failover) goes.
                    let floor = transport.timeout(self) / SYNC_FLOOR_SHARE;
                    let left_at = |t: Instant| deadline.by.saturating_duration_since(t);
                    if left_at(Instant::now()) < floor && left_at(entered) >= floor {
                        drop(slot);
                        let e = refusal.take().unwrap_or_else(DeliveryError::no_session);
                        return Err(Undelivered::Failed(e));
                    }
                    deadline
                }
            };
            match transport.send(self, out, deadline, sessions).await {
                Ok(a) => {
                    slot.accepted();
                    return Ok(a);
                }
                // Not recorded as begun, so not sent.
                Err(e) if e.kind == FailureKind::NotBegun => return Err(Undelivered::NotBegun),
                Err(e) if e.is_refused() => {
                    tries += 1;
                    let shrank = slot.refused();
                    drop(slot);
                    if e.maybe_delivered || Instant::now() >= setup_by {
                        return Err(Undelivered::Failed(e));
                    }
                    if !shrank || tries >= REFUSED_TRIES {
                        // The window is at one session, or the relay keeps turning sessions
                        // away (its sessions are taken, by other tenants or instances). An
                        // async message waits for its next attempt, and with another transport
                        // waiting the message goes there at once (API.md §12.1); a sync one
                        // with no other, its client waiting, tries again after a pause while
                        // its deadline allows: the relay's sessions free up as other sends end
                        // (API.md §10).
                        let pause = REFUSED_PAUSE * (1 << tries.min(4));
                        // Only a relay that answered it is busy; one that is down (no
                        // connection, a timeout) fails at once as before.
                        let wait = e.busy
                            && job.mode == DeliveryMode::Sync
                            && deadline.setup_by.is_none()
                            && Instant::now() + pause + MIN_TRY < setup_by;
                        if !wait {
                            return Err(Undelivered::Failed(e));
                        }
                        tokio::time::sleep(pause).await;
                    }
                    tracing::debug!(tenant_id = %out.tenant.id, detail = %e.detail, "the relay turned a session away; its window shrinks and the message goes on another");
                    refusal = Some(e);
                }
                Err(e) => {
                    if e.kind == FailureKind::Throttled {
                        slot.refused();
                    }
                    return Err(Undelivered::Failed(e));
                }
            }
        }
    }

    /// A session of the window (the ticket's place, or a new one) by `by`, the message then
    /// held by this process; a background send gives its turn up when the process stops.
    /// (A background send is recorded as begun later, just before the message leaves:
    /// [`Begin`].)
    pub(super) async fn session(
        &self,
        job: &OutboxJob,
        window: &Arc<RelayWindow>,
        ticket: Option<Ticket>,
        by: Instant,
    ) -> Result<Slot, Undelivered> {
        let queued = ticket.unwrap_or_else(|| window.queue());
        // A place in the relay's window first, then one of the process-wide bound
        // (`delivery.max_sessions`): a relay with no room never holds a global place.
        let global = Arc::clone(self.outbox.sessions());
        let tenant = job.tenant_id.as_str().to_string();
        let session = tokio::time::timeout_at(by, async move {
            let slot = queued.session().await;
            Some(slot.with_global(global.place(&tenant).await))
        });
        let background = job.mode == DeliveryMode::Async;
        let slot = if background {
            tokio::select! {
                // A stop seen at once wins over a free session.
                biased;
                _ = self.outbox.until_stopped() => return Err(Undelivered::Stopped),
                s = session => s,
            }
        } else {
            session.await
        };
        let Ok(Some(slot)) = slot else {
            return Err(Undelivered::Failed(DeliveryError::no_session()));
        };
        let (key, tenant) = (&job.key_digest, job.tenant_id.as_str());
        if !self.outbox.hold(key, tenant, job.expires_at, background) {
            return Err(Undelivered::Stopped);
        }
        Ok(slot)
    }
}
