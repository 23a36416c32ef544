//! The webhook sender: delivers events at least once from the durable event outbox — claimed
//! tenant by tenant with a lease (at most `webhooks.max_in_flight_per_tenant` requests per
//! tenant and `webhooks.max_in_flight` per process at once, so one tenant's silent endpoint
//! never delays another's events; an endpoint that timed out three times in a row gets one
//! request at a time until it answers), signed per Standard Webhooks, retried after about 5 s, 30 s, 2 min, 10 min, 1 h
//! and 6 h (later if the endpoint's `Retry-After` says so, up to an hour), then failed. An
//! endpoint that answers 410 Gone is disabled until the tenant stores it again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::cipher::{blob_version, decrypt_record};
use crate::crypto::keyring::Keyring;
use crate::domain::webhook::Webhook;
use crate::outbound::{signature, SendResult};
use crate::service::events::webhooks::{EVENT_KIND, RETRY_DELAYS_MS, SECRET_KIND};
use crate::service::Events;
use crate::storage::integration::{EventAttempt, EventClaim, EventJob, EventOutcome};
use crate::storage::Fairness;

const POLL: Duration = Duration::from_millis(500);
/// The longest wait an endpoint's `Retry-After` is honoured for (API.md §11.7).
const RETRY_AFTER_MAX_MS: i64 = 3_600_000;
/// How long an event sealed under a data key not loaded here waits before it is tried again.
const KEY_WAIT_MS: i64 = 5_000;

/// What delivering one event came to.
enum Posted {
    /// A 2xx answer.
    Delivered(u16),
    /// Any other answer, with the endpoint's `Retry-After` if it gave one.
    Answered(u16, Option<Duration>),
    /// 410 Gone from this URL: the webhook is disabled if it still points there.
    Gone(String),
    /// No answer (`timeout`, `connect`, `tls`, …).
    NoAnswer(&'static str),
    /// The tenant has no webhook any more: final.
    NoEndpoint,
    /// Sealed under a data key not loaded here even after a reload: tried again later,
    /// never failed for that reason (API.md §11.6).
    KeyUnavailable,
    /// Damaged: retried like a failure (another instance may have just made its key).
    Unreadable,
}

impl Events {
    /// The webhook sender: claim due events, post each on its own task. Runs until the
    /// process stops.
    pub async fn run_webhook_sender(self) {
        loop {
            if self.hooks.inner.stopping.load(Ordering::SeqCst) {
                return;
            }
            self.claim_and_post().await;
            tokio::select! {
                _ = self.hooks.inner.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Tell this process's webhook sender there is new work.
    pub(crate) fn wake_hooks(&self) {
        self.hooks.wake();
    }

    /// Stop claiming events (shutdown).
    pub(crate) fn stop_hooks(&self) {
        self.hooks.inner.stopping.store(true, Ordering::SeqCst);
        self.hooks.wake();
    }

    /// Webhook requests running here.
    pub(crate) fn hooks_running(&self) -> usize {
        self.hooks.running()
    }

    /// Give back the leases of every event this process holds (shutdown, once the grace
    /// ran out; API.md §19.4): one still being posted then may be posted again by a restart
    /// or another instance, as delivery is at least once (§10), never left leased. An event
    /// whose request had left (the endpoint may have it) has that attempt counted and
    /// listed among the deliveries as `interrupted`, and is due again at once; one whose
    /// attempt had ended but was not yet recorded gets its own outcome recorded (a 2xx that
    /// came in as the grace ran out is not posted again); one still before its request
    /// (reading its webhook, opening it) is only given back.
    pub(crate) async fn release_hook_leases(&self) {
        let owner = self.hooks.inner.owner.clone();
        let now = self.core.now();
        let mut interrupted = 0;
        for (attempt, was_interrupted) in self.hooks.at_shutdown(now) {
            // Recorded only while the lease is still this process's (an attempt that ended
            // meanwhile recorded its own outcome). A database that does not answer is not
            // asked again for each event: the shutdown must not wait on it many times.
            match self.core.db(move |s| s.settle_event(&attempt, now)).await {
                // Counted here only when interrupted: an ended attempt was counted as it ended.
                Ok(true) if was_interrupted => {
                    interrupted += 1;
                    crate::metrics::inc(|m| &m.webhook_attempts, &["retry"]);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "recording webhook attempts at shutdown failed; their leases are given back or run out");
                    break;
                }
            }
        }
        if interrupted > 0 {
            tracing::info!(
                interrupted,
                "webhook requests still under way were interrupted; their events are due again"
            );
        }
        match self.core.db(move |s| s.release_events(&owner, &[])).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                released = n,
                "gave back the leases of queued webhook events"
            ),
            Err(e) => tracing::warn!(error = %e, "giving back webhook events' leases failed"),
        }
    }

    async fn claim_and_post(&self) {
        let free = self.hooks.inner.slots.available_permits();
        if free == 0 {
            return;
        }
        let settings = self.core.settings.load();
        let per_tenant = settings.webhooks.max_in_flight_per_tenant;
        let caps = self.hooks.caps(per_tenant);
        let claim = EventClaim {
            now: self.core.now(),
            owner: self.hooks.inner.owner.clone(),
            lease_ms: 2 * settings.webhooks.timeout_seconds as i64 * 1000 + 30_000,
            fair: Fairness {
                limit: u32::try_from(free).unwrap_or(u32::MAX),
                caps,
                default_cap: per_tenant,
                skip: self.hooks.in_flight(),
                running: std::collections::HashSet::new(),
                after: self.hooks.cursor(),
            },
        };
        let (jobs, next) = match self.core.db(move |s| s.claim_events(&claim)).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhook events failed");
                return;
            }
        };
        self.hooks.set_cursor(next);
        for job in jobs {
            let Ok(permit) = Arc::clone(&self.hooks.inner.slots).acquire_owned().await else {
                return;
            };
            self.hooks.started(job.tenant_id.as_str(), &job.id);
            let me = self.clone();
            tokio::spawn(async move {
                me.post_event(&job).await;
                drop(permit);
                me.hooks.finished(job.tenant_id.as_str(), &job.id);
            });
        }
    }

    /// Open the event and the endpoint's secret, reloading the keyring once if either is
    /// sealed under a data key this process has not seen.
    async fn open_event(
        &self,
        job: &EventJob,
        hook: &Webhook,
    ) -> Result<(Vec<u8>, Vec<u8>), Posted> {
        let open = |ring: &Keyring| {
            let body = decrypt_record(
                ring,
                EVENT_KIND,
                job.tenant_id.as_str(),
                job.id.as_bytes(),
                &job.payload,
            );
            let secret =
                decrypt_record(ring, SECRET_KIND, job.tenant_id.as_str(), b"", &hook.secret);
            body.ok().zip(secret.ok())
        };
        let unknown = |ring: &Keyring| {
            [&hook.secret, &job.payload]
                .iter()
                .any(|blob| blob_version(blob).is_some_and(|(v, _)| !ring.has_data_key(v)))
        };
        if let Some(opened) = open(&self.core.keyring.get()) {
            return Ok(opened);
        }
        if !unknown(&self.core.keyring.get()) {
            return Err(Posted::Unreadable);
        }
        if let Err(e) = self.core.refresh_keyring().await {
            tracing::warn!(error = %e, "reloading the keyring failed");
        }
        let ring = self.core.keyring.get();
        match open(&ring) {
            Some(opened) => Ok(opened),
            None if unknown(&ring) => Err(Posted::KeyUnavailable),
            None => Err(Posted::Unreadable),
        }
    }

    async fn post(&self, job: &EventJob) -> Result<Posted, crate::service::ServiceError> {
        let tid = job.tenant_id.clone();
        let Some(hook) = self.core.db(move |s| s.webhook(&tid)).await? else {
            return Ok(Posted::NoEndpoint);
        };
        if hook.disabled.is_some() {
            return Ok(Posted::NoEndpoint);
        }
        let (body, secret) = match self.open_event(job, &hook).await {
            Ok(o) => o,
            Err(p) => return Ok(p),
        };
        let ts = self.core.now().div_euclid(1000);
        let headers = [
            ("webhook-id", job.id.clone()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", signature(&secret, &job.id, ts, &body)),
        ];
        self.hooks
            .posting(job.tenant_id.as_str(), &job.id, job.attempts);
        Ok(
            match self
                .hooks
                .inner
                .client
                .send(&hook.url, &headers, body, None)
                .await
            {
                SendResult::Status { code, .. } if (200..300).contains(&code) => {
                    Posted::Delivered(code)
                }
                SendResult::Status { code: 410, .. } => Posted::Gone(hook.url.clone()),
                SendResult::Status { code, retry_after } => Posted::Answered(code, retry_after),
                SendResult::Error(e) => Posted::NoAnswer(e),
            },
        )
    }

    async fn post_event(&self, job: &EventJob) {
        let posted = match self.post(job).await {
            Ok(p) => p,
            Err(e) => {
                // The database is away: the lease runs out and the event is tried again.
                tracing::warn!(error = %e, "reading a webhook failed");
                return;
            }
        };
        let now = self.core.now();
        let attempt = job.attempts + 1;
        if !matches!(posted, Posted::KeyUnavailable | Posted::Unreadable) {
            self.hooks.note_timeout(
                job.tenant_id.as_str(),
                matches!(posted, Posted::NoAnswer("timeout")),
            );
        }
        if let Posted::KeyUnavailable = posted {
            let (id, owner) = (job.id.clone(), self.hooks.inner.owner.clone());
            tracing::warn!(tenant_id = %job.tenant_id, event_id = %job.id, "a webhook event is sealed under a data key not loaded here; trying again later");
            let due = now + KEY_WAIT_MS;
            if let Err(e) = self.core.db(move |s| s.defer_event(&id, &owner, due)).await {
                tracing::warn!(error = %e, "deferring a webhook event failed; its lease will run out");
            }
            return;
        }
        // The next try after the schedule's wait, or later if the endpoint asked (429 or
        // 503 with Retry-After, up to an hour).
        let asked = match posted {
            Posted::Answered(429 | 503, Some(d)) => i64::try_from(d.as_millis())
                .unwrap_or(i64::MAX)
                .min(RETRY_AFTER_MAX_MS),
            _ => 0,
        };
        let (status_code, error) = match &posted {
            Posted::Delivered(c) | Posted::Answered(c, _) => (Some(*c), None),
            Posted::Gone(_) => (Some(410), None),
            Posted::NoAnswer(e) => (None, Some(*e)),
            Posted::NoEndpoint => (None, Some("no_endpoint")),
            Posted::Unreadable | Posted::KeyUnavailable => (None, Some("unreadable")),
        };
        let outcome = match posted {
            Posted::Delivered(_) => EventOutcome::Delivered,
            Posted::NoEndpoint | Posted::Gone(_) => EventOutcome::Failed,
            _ => match RETRY_DELAYS_MS.get(job.attempts as usize) {
                Some(delay) => EventOutcome::Retry {
                    due_at: now + (*delay).max(asked),
                },
                None => EventOutcome::Failed,
            },
        };
        let outcome_label = match outcome {
            EventOutcome::Delivered => "delivered",
            EventOutcome::Retry { .. } => "retry",
            EventOutcome::Failed => "failed",
        };
        crate::metrics::inc(|m| &m.webhook_attempts, &[outcome_label]);
        if outcome != EventOutcome::Delivered {
            tracing::warn!(tenant_id = %job.tenant_id, event_id = %job.id, event = %job.kind, attempt,
                status_code, error, outcome = outcome_label, "webhook attempt failed");
        }
        let gone = match &posted {
            Posted::Gone(url) => Some(url.clone()),
            _ => None,
        };
        let done = EventAttempt {
            event_id: job.id.clone(),
            owner: self.hooks.inner.owner.clone(),
            attempt,
            outcome,
            status_code,
            error: error.map(str::to_string),
        };
        self.hooks.settling(job.tenant_id.as_str(), &done);
        if let Err(e) = self.core.db(move |s| s.settle_event(&done, now)).await {
            tracing::warn!(error = %e, event_id = %job.id, "recording a webhook attempt failed; the lease will run out and the event be tried again");
        }
        if let Some(url) = gone {
            // After the attempt is recorded: disabling fails the tenant's pending events —
            // only while the webhook still points at the URL that answered (a new URL and
            // its events are untouched, API.md §17.7).
            let (tid, reason) = (job.tenant_id.clone(), "the endpoint answered 410 Gone");
            match self
                .core
                .db(move |s| s.disable_webhook(&tid, &url, reason, now))
                .await
            {
                Ok(true) => {
                    tracing::warn!(tenant_id = %job.tenant_id, "the webhook endpoint answered 410 Gone: the webhook is disabled until it is stored again")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "disabling a webhook failed"),
            }
        }
    }
}
