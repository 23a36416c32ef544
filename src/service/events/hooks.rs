//! This process's part of the event outbox: the requests in flight (in all, per tenant, and
//! which have left), each endpoint's timeouts in a row and what each tenant may still send at
//! once, the claim's cursor, and whether the sender is stopping.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, Semaphore};

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
    /// Events being delivered here, by tenant; once an event's request is under way, with
    /// the attempts made before it.
    in_flight: Mutex<HashMap<String, HashMap<String, Option<u32>>>>,
    /// Timeouts in a row of each tenant's endpoint (reset by any answer).
    timeouts: Mutex<HashMap<String, u32>>,
    cursor: Mutex<Option<String>>,
    pub(super) stopping: AtomicBool,
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
            .insert(id.to_string(), None);
    }

    /// The event's request is about to leave: from now on it may arrive.
    pub(super) fn posting(&self, tenant: &str, id: &str, attempts: u32) {
        let mut m = locked(&self.inner.in_flight);
        if let Some(entry) = m.get_mut(tenant).and_then(|ids| ids.get_mut(id)) {
            *entry = Some(attempts);
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

    /// The events whose request has left, with the attempts made before it.
    pub(super) fn posting_now(&self) -> Vec<(String, u32)> {
        locked(&self.inner.in_flight)
            .values()
            .flatten()
            .filter_map(|(id, attempts)| Some((id.clone(), (*attempts)?)))
            .collect()
    }

    /// Where the next claim starts (claims take turns between tenants).
    pub(super) fn cursor(&self) -> Option<String> {
        locked(&self.inner.cursor).clone()
    }

    pub(super) fn set_cursor(&self, next: Option<String>) {
        *locked(&self.inner.cursor) = next;
    }
}

/// What each tenant may still have in flight: `per_tenant` less what it has in flight, and
/// at most one in all for the tenants in `slow` (their endpoint kept timing out).
fn caps_of(
    in_flight: &HashMap<String, HashMap<String, Option<u32>>>,
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
mod caps_tests {
    use super::*;

    #[test]
    fn an_endpoint_that_kept_timing_out_gets_one_request_at_a_time() {
        let mut in_flight: HashMap<String, HashMap<String, Option<u32>>> = HashMap::new();
        in_flight.insert("a".into(), [("e1".to_string(), None)].into_iter().collect());
        in_flight.insert(
            "b".into(),
            [("e2".to_string(), Some(2))].into_iter().collect(),
        );
        let caps = caps_of(&in_flight, &["b".to_string(), "c".to_string()], 4);
        assert_eq!(caps["a"], 3, "a healthy endpoint keeps its share");
        assert_eq!(
            caps["b"], 0,
            "a slow endpoint with one in flight gets no more"
        );
        assert_eq!(caps["c"], 1, "a slow endpoint with none in flight gets one");
    }
}
