//! The background sender: claims due messages tenant by tenant, each tenant within its
//! relay's free sessions (so one tenant's backlog never delays another's message), sends each
//! on its own task, sweeps rows nobody holds, and at shutdown lets running sends finish and
//! gives back the leases of the rest.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Delivery;
use crate::domain::event::EventType;
use crate::domain::keys::TenantId;
use crate::domain::tenant::Tenant;
use crate::domain::Millis;
use crate::service::ServiceError;
use crate::storage::rules::SweepVerdict;
use crate::storage::{ClaimRequest, Fairness, Keep, OutboxJob, SweepItem, Unsent};

/// How often the sender looks for due work it was not told about (retries coming due, rows
/// of other instances, expired leases).
const POLL: Duration = Duration::from_millis(250);
/// How often rows nobody holds are swept.
const SWEEP: Duration = Duration::from_secs(5);
/// How often idle relay windows are let go.
const TIDY: Duration = Duration::from_secs(30);
/// How often idle SMTP connections are let go: those past their idle time, and those beyond
/// `smtp.pool_size` a burst left (they go a moment after it, API.md §10: `pool_size` are kept).
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Rows claimed per round at most.
const CLAIM_BATCH: u32 = 256;

/// Counts a background send, of the message with this key, as running until dropped.
struct Running(Delivery, Vec<u8>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.outbox.ended(&self.1);
    }
}

impl Delivery {
    /// The sender: claim due rows, deliver each on its own task, sweep now and then. Runs
    /// until the process stops ([`Delivery::stop_delivery`]).
    pub async fn run_sender(self) {
        let mut sweep = tokio::time::interval(SWEEP);
        let mut tidy = tokio::time::interval(TIDY);
        let mut idle = tokio::time::interval(IDLE_TICK);
        let mut claim = true;
        loop {
            if self.outbox.stopping() {
                return;
            }
            if claim {
                self.claim_and_send().await;
            }
            claim = true;
            tokio::select! {
                _ = self.outbox.inner.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = sweep.tick() => self.sweep_once().await,
                _ = tidy.tick() => self.outbox.inner.windows.prune(),
                _ = idle.tick() => {
                    // Only connections: no claim for this tick.
                    claim = false;
                    let closed = self.core.mailer.close_idle();
                    if closed > 0 {
                        tracing::debug!(closed, "closed idle SMTP connections");
                    }
                }
                _ = self.outbox.until_stopped() => return,
            }
        }
    }

    async fn claim_and_send(&self) {
        loop {
            // An instance whose master key no longer opens the stored keyring could open no
            // credentials sealed since: it leaves the queue to instances that can (its
            // `/readyz` says why).
            if self.outbox.stopping() || self.core.keyring.locked_out() {
                return;
            }
            let (caps, other_caps) = self.lane_caps();
            let req = ClaimRequest {
                now: self.core.now(),
                lease: self.lease(),
                other_caps,
                fair: Fairness {
                    limit: CLAIM_BATCH,
                    caps,
                    default_cap: self.core.settings.load().smtp.initial_connections,
                    skip: self.outbox.held(),
                    // A message whose send is under way here: its lease may have run out
                    // and been given back by this process's own sweep while it waited for
                    // a session, and a second send under the same owner would pass every
                    // check the first one makes.
                    running: self.outbox.sending().into_iter().collect(),
                    after: super::locked(&self.outbox.inner.cursor).clone(),
                },
            };
            let claimed = match self.core.db(move |s| s.claim_outbox(&req)).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming outbox work failed");
                    return;
                }
            };
            *super::locked(&self.outbox.inner.cursor) = claimed.next_after;
            if claimed.jobs.is_empty() {
                return;
            }
            let full = claimed.jobs.len() as u32 >= CLAIM_BATCH;
            let mut tenants: HashMap<TenantId, Option<Tenant>> = HashMap::new();
            for job in claimed.jobs {
                if !tenants.contains_key(&job.tenant_id) {
                    let id = job.tenant_id.clone();
                    match self.core.db(move |s| s.tenant(&id)).await {
                        Ok(row) => {
                            tenants.insert(job.tenant_id.clone(), row);
                        }
                        Err(e) => {
                            // Give the row back rather than hold it for a whole lease.
                            tracing::warn!(error = %e, "reading a claimed message's tenant failed");
                            let (key, owner, due) = (
                                job.key_digest.clone(),
                                self.outbox.owner().to_string(),
                                self.core.now(),
                            );
                            if let Err(e) = self
                                .core
                                .db(move |s| s.outbox_defer(&key, &owner, Some(due)))
                                .await
                            {
                                tracing::warn!(error = %e, "giving back a claimed message failed: the next sweep gives it back");
                            }
                            continue;
                        }
                    }
                }
                let Some(Some(tenant)) = tenants.get(&job.tenant_id).cloned() else {
                    // Deleted meanwhile: its rows go with it.
                    continue;
                };
                self.dispatch(job, tenant);
            }
            if !full {
                return;
            }
        }
    }

    /// Send a message this process claimed on a task of its own, within its channel's
    /// window.
    fn dispatch(&self, job: OutboxJob, tenant: Tenant) {
        self.send_leased(job, tenant, false);
    }

    /// An async mint's or resend's message about to be stored leased by this process
    /// (`NewOutbox::lease`): held — no claim here takes it, no sweep here gives its lease
    /// back — until [`Delivery::hand_over`] sends it, or [`Delivery::never_stored`] says
    /// its store stored nothing. When the store answered 503 it stays held until its code
    /// ends: a store that committed after all is undone (the message given up as never
    /// sent, a mint's code cancelled) while its row is still this process's, never sent.
    pub(crate) fn hold_for_hand_over(&self, key: &[u8], tenant: &str, expires_at: Millis) {
        self.outbox.hold_hand_over(key, tenant, expires_at);
    }

    /// Send a message held for its hand-over, now that its store answered in time. A
    /// process that is stopping sends nothing new: the row goes back to the queue with its
    /// lease.
    pub(crate) fn hand_over(&self, job: OutboxJob, tenant: Tenant) {
        self.send_leased(job, tenant, true);
    }

    /// A message held for its hand-over whose store stored nothing (a quota refused it).
    pub(crate) fn never_stored(&self, key: &[u8]) {
        self.outbox.let_go_hand_over(key);
    }

    fn send_leased(&self, job: OutboxJob, tenant: Tenant, handed: bool) {
        if self.outbox.stopping() {
            if handed {
                self.outbox.let_go_hand_over(&job.key_digest);
            }
            return;
        }
        // Queued in its channel's window now, so the next claim counts this send.
        let ticket = self.lane_window(&tenant, job.channel).queue();
        self.outbox.started(&job.key_digest);
        // Sending now, so no longer held for its hand-over (before its send can hold its
        // outcome).
        if handed {
            self.outbox.let_go_hand_over(&job.key_digest);
        }
        let running = Running(self.clone(), job.key_digest.clone());
        tokio::spawn(async move {
            running.0.attempt(&job, &tenant, Some(ticket)).await;
            drop(running);
        });
    }

    /// Settle the rows nobody holds whose code is no longer live (or whose sync sender
    /// died), with the `otp.delivery_failed` event of an expired code in the same
    /// transaction.
    pub(crate) async fn sweep_once(&self) {
        let now = self.core.now();
        self.outbox.tidy(now);
        self.release_strays().await;
        // A message this process sends, or whose outcome it still has to record, is not
        // the sweep's, even when its lease ran out during an outage (API.md §11.3–11.4).
        self.settle_run_out(now, Sweep::AllButHeld).await;
    }

    /// Settle what nobody holds any more (see `sweep_once`): every row, but the messages
    /// this process holds, or only the rows of given keys.
    async fn settle_run_out(&self, now: Millis, which: Sweep) {
        // A claimed message whose lease ran out before its send began (its sender died
        // while it waited for a session, or before its relay's go-ahead to DATA) left
        // nothing: it goes back to the queue.
        match self.core.write(move |s| s.release_unstarted(now)).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(
                    released = n,
                    "gave back queued messages whose sender stopped before it began to send them"
                );
                self.outbox.wake();
            }
            Err(e) => tracing::warn!(error = %e, "giving back unstarted messages failed"),
        }
        let (among, but_held) = match which {
            Sweep::Only(keys) => (Some(keys), false),
            Sweep::AllButHeld => (None, true),
        };
        let found = self
            .core
            .db(move |s| s.sweep_candidates(now, among.as_deref()))
            .await;
        let mut candidates = match found {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "outbox sweep failed");
                return;
            }
        };
        if but_held {
            // Read after the candidates: a message held by then is not the sweep's.
            let held = self.outbox.held();
            candidates.retain(|c| !held.contains_key(&c.key_digest));
        }
        if candidates.is_empty() {
            return;
        }
        let mut items = Vec::with_capacity(candidates.len());
        let mut events = 0;
        for c in candidates {
            let event = match (&c.verdict, &c.payload) {
                (SweepVerdict::Expired, Some(payload)) => {
                    match self.open_sealed(&c.tenant_id, &c.key_digest, payload).await {
                        Ok(msg) => msg.event_data(Some("expired")).and_then(|data| {
                            let failed = EventType::OtpDeliveryFailed;
                            self.events.event_for(&c.tenant_id, None, failed, data)
                        }),
                        Err(_) => None,
                    }
                }
                _ => None,
            };
            events += usize::from(event.is_some());
            items.push(SweepItem {
                key_digest: c.key_digest,
                verdict: c.verdict,
                event,
            });
        }
        match self.core.write(move |s| s.settle_swept(&items, now)).await {
            Ok(0) => {}
            Ok(settled) => {
                tracing::info!(settled, "settled queued messages nobody holds");
                if events > 0 {
                    self.events.wake_hooks();
                }
            }
            Err(e) => tracing::warn!(error = %e, "outbox sweep failed"),
        }
    }

    /// Give back the queued messages leased to this process that nothing here sends or
    /// holds: a claim whose answer was lost after its commit (a timeout, a connection cut),
    /// or a claimed message whose tenant could not be read and that could not be given back
    /// then. Left alone they would wait out their lease before the sweep gave them back.
    /// Runs in the sender's loop, between claims: every message claimed here is then either
    /// sending or, once its send ended, settled or held. What is sending or held is read
    /// by the store once it has read the leased rows (`OutboxStore::release_leases`): read
    /// before, an async mint's row stored (held, then inserted leased here) between that
    /// read and the store's would be given back while its send went on, and sent again by
    /// the next claim (found by a black-box soak: one message of ~5,500 mailed twice).
    async fn release_strays(&self) {
        let outbox = self.outbox.clone();
        match self
            .give_back_leases(Arc::new(move || outbox.sending_or_held()))
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(released = n, "gave back queued messages leased here that nothing was sending (a claim's answer was lost)");
                self.outbox.wake();
            }
            Err(e) => {
                tracing::warn!(error = %e, "giving back stray leases failed; trying again at the next sweep")
            }
        }
    }

    /// Give back this process's leases on queued messages of live codes, but `keep`'s.
    async fn give_back_leases(&self, keep: Keep) -> Result<usize, ServiceError> {
        let (owner, now) = (self.outbox.owner().to_string(), self.core.now());
        self.core
            .db(move |s| s.release_leases(&owner, keep, now))
            .await
    }

    /// When the stop began (the senders stopped claiming), if it has.
    pub fn stopped_at(&self) -> Option<std::time::Instant> {
        self.outbox.inner.stopped_at.get().copied()
    }

    /// Shutdown (API.md §11.5): stop claiming (the sender loops are awaited, so a claim
    /// under way has spawned its sends before this goes on), let the running sends finish
    /// within `grace` of the stop, then give back the leases of every message and event not
    /// being sent, so a restart or another instance sends them at once, and end those of
    /// the rest (API.md §19.4: no lease outlives its process).
    pub async fn stop_delivery(&self, grace: Duration, loops: Vec<tokio::task::JoinHandle<()>>) {
        self.outbox.stop();
        self.events.stop_hooks();
        let stopped_at = self
            .outbox
            .inner
            .stopped_at
            .get()
            .copied()
            .unwrap_or_else(std::time::Instant::now);
        let deadline = tokio::time::Instant::from_std(stopped_at) + grace;
        for l in loops {
            let abort = l.abort_handle();
            if tokio::time::timeout_at(deadline, l).await.is_err() {
                abort.abort();
            }
        }
        while (self.outbox.inner.running.load(Ordering::SeqCst) > 0
            || self.events.hooks_running() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let keep = self.outbox.close();
        let kept = keep.clone();
        match self.give_back_leases(Arc::new(move || kept.clone())).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "gave back the leases of queued messages"),
            Err(e) => {
                tracing::warn!(error = %e, "giving back queued messages' leases failed: once their leases run out they are given back by the sweep")
            }
        }
        // A sync message whose client went with the server before it had a session was
        // never sent: recorded so (`not_sent`), not left to run out into `unknown`.
        let (owner, now) = (self.outbox.owner().to_string(), self.core.now());
        let unsent = Unsent::AllBut(keep);
        match self
            .core
            .write(move |s| s.settle_unsent_sync(&owner, unsent, now))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                settled = n,
                "recorded sync messages stopped before they were sent as not sent"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "recording sync messages stopped before they were sent failed: once their leases run out they are recorded unknown")
            }
        }
        // What this process still holds a lease on — a send under way when the grace ran
        // out, an outcome not yet recorded, a message whose code ended — keeps it no longer
        // either (API.md §19.4): the lease ends now and the row is settled as any lease that
        // ran out is. A send that began may have arrived: it is `unknown` and never sent
        // again by itself (§19.2; a late outcome still upgrades it); one that had not begun
        // goes back to the queue.
        let (owner, now) = (self.outbox.owner().to_string(), self.core.now());
        match self
            .core
            .write(move |s| s.run_out_leases(&owner, now))
            .await
        {
            Ok(keys) if keys.is_empty() => {}
            Ok(keys) => {
                tracing::warn!(
                    ended = keys.len(),
                    "ended the leases still held on queued messages when the grace ran out"
                );
                self.settle_run_out(now, Sweep::Only(keys)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ending the leases still held on queued messages failed: once they run out the sweep settles them")
            }
        }
        self.events.release_hook_leases().await;
    }
}

/// Which rows a sweep settles.
enum Sweep {
    /// Every row whose lease ran out (or that nobody holds), but the messages this process
    /// holds: it sends them, or still has to record their outcome.
    AllButHeld,
    /// Only the rows of these keys (shutdown: the leases it just ended).
    Only(Vec<Vec<u8>>),
}
