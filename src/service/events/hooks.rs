//! This process's part of the event outbox: the requests in flight (in all, per tenant, and
//! which have left), each endpoint's timeouts in a row and what each tenant may still send at
//! once, the claim's cursor, and whether the sender is stopping.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, Semaphore};

use crate::domain::Millis;
use crate::storage::integration::{EventAttempt, EventOutcome};

/// The error a webhook attempt cut off at shutdown is listed with (API.md §19.4).
const INTERRUPTED: &str = "interrupted";

/// Timeouts in a row after which an endpoint gets one request at a time (API.md §17.7).
const TIMEOUTS_TO_SLOW: u32 = 3;

/// This process's part of the event outbox: its lease owner id, the sender's wake-up, the
/// HTTP client, the requests in flight (in all and per tenant) and whether it is stopping.
#[derive(Clone)]
pub struct Hooks {
    pub(super) inner: Arc<HooksInner>,
}

pub(super) struct HooksInner {
    pub(super) owner: String,
    pub(super) wake: Notify,
    pub(super) slots: Arc<Semaphore>,
    pub(super) client: crate::outbound::WebhookClient,
    /// Events being delivered here, by tenant, and where each stands.
    in_flight: Mutex<HashMap<String, HashMap<String, Stage>>>,
    /// Timeouts in a row of each tenant's endpoint (reset by any answer).
    timeouts: Mutex<HashMap<String, u32>>,
    cursor: Mutex<Option<String>>,
    pub(super) stopping: AtomicBool,
}

/// Where an event being delivered here stands.
#[derive(Debug, Clone)]
pub(super) enum Stage {
    /// Its webhook being read, the event opened: nothing has left.
    Before,
    /// Its request has left (the endpoint may have it), after this many attempts.
    Posting(u32),
    /// The attempt has ended (answered, or failed) and its outcome is being recorded.
    Settling(EventAttempt),
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hooks {
    /// The HTTP client for tenants' endpoints (webhooks and the HTTP transport).
    pub(crate) fn client(&self) -> &crate::outbound::WebhookClient {
        &self.inner.client
    }

    /// `max_in_flight`: webhook requests in flight in this process (`webhooks.max_in_flight`).
    pub fn new(client: crate::outbound::WebhookClient, max_in_flight: usize) -> Hooks {
        Hooks {
            inner: Arc::new(HooksInner {
                owner: format!("inst_{}", crate::domain::keys::random_id(16)),
                wake: Notify::new(),
                slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
                client,
                in_flight: Mutex::new(HashMap::new()),
                timeouts: Mutex::new(HashMap::new()),
                cursor: Mutex::new(None),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) fn wake(&self) {
        self.inner.wake.notify_one();
    }

    pub(super) fn started(&self, tenant: &str, id: &str) {
        locked(&self.inner.in_flight)
            .entry(tenant.to_string())
            .or_default()
            .insert(id.to_string(), Stage::Before);
    }

    /// The event's request is about to leave: from now on it may arrive.
    pub(super) fn posting(&self, tenant: &str, id: &str, attempts: u32) {
        self.set_stage(tenant, id, Stage::Posting(attempts));
    }

    /// The event's attempt has ended as `attempt` says, which is being recorded: a shutdown
    /// that comes first records that, not an interruption.
    pub(super) fn settling(&self, tenant: &str, attempt: &EventAttempt) {
        self.set_stage(tenant, &attempt.event_id, Stage::Settling(attempt.clone()));
    }

    fn set_stage(&self, tenant: &str, id: &str, stage: Stage) {
        let mut m = locked(&self.inner.in_flight);
        if let Some(entry) = m.get_mut(tenant).and_then(|ids| ids.get_mut(id)) {
            *entry = stage;
        }
    }

    pub(super) fn finished(&self, tenant: &str, id: &str) {
        let mut m = locked(&self.inner.in_flight);
        if let Some(ids) = m.get_mut(tenant) {
            ids.remove(id);
            if ids.is_empty() {
                m.remove(tenant);
            }
        }
        drop(m);
        self.wake();
    }

    /// An attempt's outcome for the endpoint's timeout count: a timeout adds one, anything
    /// else (an answer, another error) starts it over.
    pub(super) fn note_timeout(&self, tenant: &str, timed_out: bool) {
        let mut m = locked(&self.inner.timeouts);
        if timed_out {
            *m.entry(tenant.to_string()).or_default() += 1;
        } else {
            m.remove(tenant);
        }
    }

    /// What each tenant may still have in flight: `per_tenant` less what it has, and for an
    /// endpoint that kept timing out one request at a time.
    pub(super) fn caps(&self, per_tenant: u32) -> HashMap<String, u32> {
        let in_flight = locked(&self.inner.in_flight);
        let slow: Vec<String> = locked(&self.inner.timeouts)
            .iter()
            .filter(|(_, n)| **n >= TIMEOUTS_TO_SLOW)
            .map(|(t, _)| t.clone())
            .collect();
        caps_of(&in_flight, &slow, per_tenant)
    }

    /// Webhook requests running here.
    pub(super) fn running(&self) -> usize {
        locked(&self.inner.in_flight)
            .values()
            .map(HashMap::len)
            .sum()
    }

    /// The events in flight here, with their tenants (a claim must not take them).
    pub(super) fn in_flight(&self) -> HashMap<String, String> {
        locked(&self.inner.in_flight)
            .iter()
            .flat_map(|(t, ids)| ids.keys().map(move |id| (id.clone(), t.clone())))
            .collect()
    }

    /// What to record for the events in flight here when the shutdown's grace has run out
    /// (API.md §19.4), each with whether it was interrupted: see [`at_shutdown`].
    pub(super) fn at_shutdown(&self, now: Millis) -> Vec<(EventAttempt, bool)> {
        let m = locked(&self.inner.in_flight);
        at_shutdown(m.values().flatten(), &self.inner.owner, now)
    }

    /// Where the next claim starts (claims take turns between tenants).
    pub(super) fn cursor(&self) -> Option<String> {
        locked(&self.inner.cursor).clone()
    }

    pub(super) fn set_cursor(&self, next: Option<String>) {
        *locked(&self.inner.cursor) = next;
    }
}

/// What to record at shutdown for events in flight, each with whether it was interrupted:
/// nothing for one before its request (its lease is only given back); for one whose request
/// had left, an `interrupted` attempt (no status code) due again at once; for one whose
/// attempt had ended but was not yet recorded, that attempt's own outcome (a 2xx that came in
/// as the grace ran out is not posted again).
fn at_shutdown<'a>(
    stages: impl Iterator<Item = (&'a String, &'a Stage)>,
    owner: &str,
    now: Millis,
) -> Vec<(EventAttempt, bool)> {
    stages
        .filter_map(|(id, stage)| match stage {
            Stage::Before => None,
            Stage::Settling(done) => Some((done.clone(), false)),
            Stage::Posting(attempts) => Some((
                EventAttempt {
                    event_id: id.clone(),
                    owner: owner.to_string(),
                    attempt: attempts + 1,
                    outcome: EventOutcome::Retry { due_at: now },
                    status_code: None,
                    error: Some(INTERRUPTED.to_string()),
                },
                true,
            )),
        })
        .collect()
}

/// What each tenant may still have in flight: `per_tenant` less what it has in flight, and
/// at most one in all for the tenants in `slow` (their endpoint kept timing out).
fn caps_of(
    in_flight: &HashMap<String, HashMap<String, Stage>>,
    slow: &[String],
    per_tenant: u32,
) -> HashMap<String, u32> {
    let mut caps: HashMap<String, u32> = in_flight
        .iter()
        .map(|(t, ids)| {
            let n = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            (t.clone(), per_tenant.saturating_sub(n))
        })
        .collect();
    for t in slow {
        let busy = in_flight.get(t).map_or(0, HashMap::len);
        caps.insert(t.clone(), u32::from(busy == 0));
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_that_kept_timing_out_gets_one_request_at_a_time() {
        let mut in_flight: HashMap<String, HashMap<String, Stage>> = HashMap::new();
        in_flight.insert(
            "a".into(),
            [("e1".to_string(), Stage::Before)].into_iter().collect(),
        );
        in_flight.insert(
            "b".into(),
            [("e2".to_string(), Stage::Posting(2))]
                .into_iter()
                .collect(),
        );
        let caps = caps_of(&in_flight, &["b".to_string(), "c".to_string()], 4);
        assert_eq!(caps["a"], 3, "a healthy endpoint keeps its share");
        assert_eq!(
            caps["b"], 0,
            "a slow endpoint with one in flight gets no more"
        );
        assert_eq!(caps["c"], 1, "a slow endpoint with none in flight gets one");
    }

    #[test]
    fn at_shutdown_an_ended_attempt_keeps_its_outcome_and_one_under_way_is_interrupted() {
        let delivered = EventAttempt {
            event_id: "evt_done".into(),
            owner: "inst_a".into(),
            attempt: 2,
            outcome: EventOutcome::Delivered,
            status_code: Some(204),
            error: None,
        };
        let stages = [
            ("evt_before".to_string(), Stage::Before),
            ("evt_posting".to_string(), Stage::Posting(3)),
            ("evt_done".to_string(), Stage::Settling(delivered)),
        ];
        let mut got = at_shutdown(stages.iter().map(|(i, s)| (i, s)), "inst_a", 5_000);
        got.sort_by(|a, b| a.0.event_id.cmp(&b.0.event_id));
        assert_eq!(
            got.len(),
            2,
            "an event before its request records nothing: {got:?}"
        );
        let (done, done_interrupted) = &got[0];
        assert_eq!(done.event_id, "evt_done");
        assert!(!done_interrupted);
        assert_eq!(done.outcome, EventOutcome::Delivered);
        assert_eq!((done.attempt, done.status_code), (2, Some(204)));
        assert_eq!(done.error, None, "a 2xx that came in is not 'interrupted'");
        let (cut, cut_interrupted) = &got[1];
        assert_eq!(cut.event_id, "evt_posting");
        assert!(cut_interrupted);
        assert_eq!(cut.attempt, 4, "the attempt under way counts");
        assert_eq!(cut.outcome, EventOutcome::Retry { due_at: 5_000 });
        assert_eq!((cut.owner.as_str(), cut.status_code), ("inst_a", None));
        assert_eq!(cut.error.as_deref(), Some(INTERRUPTED));
    }
}
