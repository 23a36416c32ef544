//! One delivery attempt, the same for both modes: open the sealed message, take a session of
//! the relay's window, send, and record the outcome — only as the holder of the message's
//! lease, with the webhook event of a final outcome in the same transaction. A session the
//! relay turns away shrinks the window and the message goes on another session within the
//! same deadline, so probing a relay's limit costs no message.

use super::window::Ticket;
use super::{Delivery, StoredMessage, Unopened};
use crate::domain::delivery::{next_try_at, DeliveryMode};
use crate::domain::event::EventType;
use crate::domain::tenant::Tenant;
use crate::mailer::{DeliveryError, DeliveryReason};
use crate::storage::integration::NewEvent;
use crate::storage::{AttemptFailure, AttemptRecord, OutboxJob, Store, StoreError, Unsent};

/// The longest wait a `Retry-After` is honoured for (API.md §11.7).
const RETRY_AFTER_MAX_MS: i64 = 3_600_000;
/// How long a message that cannot be opened yet (its data key is not loaded here) waits.
const KEY_WAIT_MS: i64 = 5_000;

/// How long a queued message whose send could not be recorded as begun waits before it is
/// given back to the queue.
const NOT_BEGUN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Sent,
    /// Transient failure; the row is due again later.
    /// (With the code beyond the reason, if any: a provider's own, `oauth2_unavailable`.)
    Retry(DeliveryReason, Option<String>),
    Failed(DeliveryReason, Option<String>),
    /// The message may have reached the person and no answer came (API.md §19.2): recorded
    /// `unknown`, counted as one send, the code valid; never sent again by itself.
    Unknown(DeliveryReason),
    /// Not made: the process is stopping, or the message cannot be opened yet. The row is
    /// released (at shutdown) or due again shortly; nothing was counted.
    NotMade,
}

/// Why a send did not happen.
pub(super) enum Undelivered {
    Failed(DeliveryError),
    /// Not sent, and not to be sent here now (background sends only): shutting down
    /// before a session was free.
    Stopped,
    /// Not sent: the send's beginning could not be recorded under this process's lease
    /// just before the message would have left (the lease ran out and was given back or
    /// taken, or the database did not answer). Given back a moment later, its place in the
    /// queue kept.
    NotBegun,
    /// No transport had a session free within the wait, and none was tried: every place of
    /// its window or of the process-wide bound (`delivery.max_sessions`) stayed taken.
    NoRoom(DeliveryError),
}

impl Delivery {
    /// One attempt of a row this process holds (sync: the mint's own; async: claimed).
    /// `ticket`: a place already queued in the relay's window (the sender queues when it
    /// claims, so its next claim counts this send).
    pub(crate) async fn attempt(
        &self,
        job: &OutboxJob,
        tenant: &Tenant,
        ticket: Option<Ticket>,
    ) -> Attempt {
        let attempts = job.attempts + 1;
        let msg = match self
            .open_sealed(&job.tenant_id, &job.key_digest, &job.payload)
            .await
        {
            Ok(m) => m,
            Err(Unopened::UnknownKey) => {
                // Never failed for that reason (API.md §11.6): another instance made a data
                // key this one cannot load yet. Due again shortly; no attempt counted.
                tracing::warn!(tenant_id = %tenant.id, "a queued message is sealed under a data key not loaded here; trying again later");
                let (key, owner, due) = (
                    job.key_digest.clone(),
                    self.outbox.owner().to_string(),
                    self.core.now() + KEY_WAIT_MS,
                );
                self.record(job, move |s| {
                    s.outbox_defer(&key, &owner, Some(due))?;
                    Ok(true)
                })
                .await;
                return Attempt::NotMade;
            }
            Err(Unopened::Unreadable) => {
                tracing::error!(tenant_id = %tenant.id, "a queued message cannot be opened; giving it up");
                let rec = AttemptRecord {
                    attempts,
                    ..AttemptRecord::default()
                };
                let failure = AttemptFailure {
                    reason: DeliveryReason::Rejected,
                    maybe_delivered: false,
                };
                return self.record_failed(job, rec, failure, None).await;
            }
        };
        let started = std::time::Instant::now();
        let sent = match self.send_via_route(job, tenant, &msg, ticket).await {
            // Stopped before a session, or before its send was recorded as begun (perhaps
            // after an earlier transport failed without sending): nothing was sent, and
            // nothing will be here. Its lease goes back now
            // (API.md §19.4) — the shutdown's own release may already have passed it over
            // while it was held: a queued message stays queued, due as it was; a sync one is
            // recorded as never sent (its client was told 503), not left to run out into
            // `unknown`.
            Err(u @ (Undelivered::Stopped | Undelivered::NotBegun)) => {
                let (key, owner, now) = (
                    job.key_digest.clone(),
                    self.outbox.owner().to_string(),
                    self.core.now(),
                );
                let sync = job.mode == DeliveryMode::Sync;
                if matches!(u, Undelivered::NotBegun) {
                    // A moment here (the database was slow or away), not a stream of aborted
                    // transactions at the relay; the message keeps its place in the queue.
                    tokio::select! {
                        _ = tokio::time::sleep(NOT_BEGUN_WAIT) => {}
                        _ = self.outbox.until_stopped() => {}
                    }
                }
                self.record(job, move |s| {
                    if sync {
                        s.settle_unsent_sync(&owner, Unsent::Only(key.clone()), now)?;
                    } else {
                        s.outbox_defer(&key, &owner, None)?;
                    }
                    Ok(true)
                })
                .await;
                return Attempt::NotMade;
            }
            // A background message that found no room stays queued (API.md §19.3): nothing
            // was tried, so no attempt is counted, and it keeps its place in the queue (its
            // due time unchanged) for the next claim.
            Err(Undelivered::NoRoom(_)) if job.mode == DeliveryMode::Async => {
                tracing::debug!(tenant_id = %tenant.id, "no session was free for a queued message; it stays queued");
                let (key, owner) = (job.key_digest.clone(), self.outbox.owner().to_string());
                self.record(job, move |s| {
                    s.outbox_defer(&key, &owner, None)?;
                    Ok(true)
                })
                .await;
                return Attempt::NotMade;
            }
            Ok(delivered) => Ok(delivered),
            Err(Undelivered::Failed(e) | Undelivered::NoRoom(e)) => Err(e),
        };
        let outcome = match &sent {
            Ok(_) => "sent",
            Err(e) => e.reason.as_str(),
        };
        if let Some(m) = crate::metrics::get() {
            if let Ok(h) = m.smtp_send_seconds.get_metric_with_label_values(&[outcome]) {
                h.observe(started.elapsed().as_secs_f64());
            }
        }
        crate::metrics::inc(|m| &m.deliveries, &[job.mode.as_str(), outcome]);
        let recipient = crate::domain::email::mask(&job.recipient);
        match sent {
            Ok(delivered) => {
                let (now, key, owner) = (
                    self.core.now(),
                    job.key_digest.clone(),
                    self.outbox.owner().to_string(),
                );
                let event = self.outcome_event(tenant, &msg, None);
                let raised = event.is_some();
                tracing::info!(tenant_id = %tenant.id, recipient = %recipient, mode = job.mode.as_str(), attempts, transport = %delivered.transport, "code sent");
                let rec = AttemptRecord {
                    attempts,
                    transport: Some(delivered.transport),
                    provider_message_id: delivered.accepted.message_id,
                    ..AttemptRecord::default()
                };
                self.record(job, move |s| {
                    s.outbox_sent(&key, &owner, &rec, now, event.as_ref())
                })
                .await;
                if raised {
                    self.events.wake_hooks();
                }
                Attempt::Sent
            }
            Err(e) => {
                tracing::warn!(tenant_id = %tenant.id, recipient = %recipient, mode = job.mode.as_str(), attempts, reason = e.reason.as_str(), detail = %e.detail, check = e.reason.advice(), transient = e.is_transient(), "delivery attempt failed");
                let now = self.core.now();
                // The schedule's next try, or later if the endpoint asked (`Retry-After`, up
                // to an hour), before the code expires.
                let asked = e.retry_after.map_or(0, |d| {
                    i64::try_from(d.as_millis())
                        .unwrap_or(i64::MAX)
                        .min(RETRY_AFTER_MAX_MS)
                });
                // A send whose outcome is unknown is never made again by itself: the person
                // may have the message (API.md §19.2).
                let retry_at =
                    (e.is_transient() && !e.outcome_unknown && job.mode == DeliveryMode::Async)
                        .then(|| next_try_at(attempts, now, job.expires_at, asked, e.busy))
                        .flatten();
                let failure = AttemptFailure {
                    reason: e.reason,
                    maybe_delivered: e.maybe_delivered,
                };
                match retry_at {
                    Some(due) => {
                        let (key, owner) =
                            (job.key_digest.clone(), self.outbox.owner().to_string());
                        let rec = AttemptRecord {
                            attempts,
                            detail_code: e.detail_code.clone(),
                            ..AttemptRecord::default()
                        };
                        self.record(job, move |s| {
                            s.outbox_retry(&key, &owner, &rec, failure, due)
                        })
                        .await;
                        Attempt::Retry(e.reason, e.detail_code.clone())
                    }
                    None if e.outcome_unknown => {
                        tracing::warn!(tenant_id = %tenant.id, recipient = %recipient, reason = e.reason.as_str(), detail_code = e.detail_code.as_deref().unwrap_or(""), "the message may have been delivered (no answer came, or one that did not say: a part of a long text refused after another was taken): recorded unknown, not sent again");
                        let rec = AttemptRecord {
                            attempts,
                            detail_code: e.detail_code.clone(),
                            outcome_unknown: true,
                            ..AttemptRecord::default()
                        };
                        let failure = AttemptFailure {
                            maybe_delivered: true,
                            ..failure
                        };
                        self.record_failed(job, rec, failure, None).await;
                        Attempt::Unknown(e.reason)
                    }
                    None => {
                        let event = self.outcome_event(tenant, &msg, Some(e.reason));
                        let rec = AttemptRecord {
                            attempts,
                            detail_code: e.detail_code.clone(),
                            ..AttemptRecord::default()
                        };
                        self.record_failed(job, rec, failure, event).await
                    }
                }
            }
        }
    }

    /// The event of a final outcome of this message, if its tenant subscribes.
    pub(super) fn outcome_event(
        &self,
        tenant: &Tenant,
        msg: &StoredMessage,
        reason: Option<DeliveryReason>,
    ) -> Option<NewEvent> {
        let data = msg.event_data(reason.map(|r| r.as_str()))?;
        let kind = if reason.is_some() {
            EventType::OtpDeliveryFailed
        } else {
            EventType::OtpSent
        };
        self.events
            .event_for(&tenant.id, Some(&tenant.webhook_events), kind, data)
    }

    async fn record_failed(
        &self,
        job: &OutboxJob,
        rec: AttemptRecord,
        failure: AttemptFailure,
        event: Option<NewEvent>,
    ) -> Attempt {
        let (now, key, owner) = (
            self.core.now(),
            job.key_digest.clone(),
            self.outbox.owner().to_string(),
        );
        let (raised, code) = (event.is_some(), rec.detail_code.clone());
        self.record(job, move |s| {
            s.outbox_failed(&key, &owner, &rec, failure, now, event.as_ref())
        })
        .await;
        if raised {
            self.events.wake_hooks();
        }
        Attempt::Failed(failure.reason, code)
    }

    /// Record an outcome as the lease's holder. Until it is recorded the message is never
    /// claimed here again, however long the database is away (API.md §11.3); an outcome
    /// that comes too late (the row was settled or re-claimed meanwhile) changes nothing.
    async fn record<F>(&self, job: &OutboxJob, f: F)
    where
        F: Fn(&dyn Store) -> Result<bool, StoreError> + Send + Sync + 'static,
    {
        let (key, tenant) = (&job.key_digest, job.tenant_id.as_str());
        self.outbox.hold(key, tenant, job.expires_at, false);
        let (outbox, done) = (self.outbox.clone(), job.key_digest.clone());
        self.core.record_until_taken(
            "a delivery outcome",
            move |s| {
                if !f(s)? {
                    tracing::info!("a delivery outcome came after its lease was settled or taken over; nothing changed");
                }
                Ok(())
            },
            move || outbox.let_go(&done),
        )
        .await;
    }
}
