//! The circuit breaker of each transport, per process (API.md §12.1): after
//! `delivery.breaker_failures` transient failures in a row a relay is skipped for
//! `delivery.breaker_seconds` while another relay can take the message; then one message
//! probes it (the others keep skipping it until the probe's outcome). A relay that answers —
//! even with a permanent refusal — closes its breaker.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::Millis;

/// What a failure did to a relay's breaker (the caller logs an opening once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// Nothing to say: still closed, or already open.
    None,
    /// It opened: the failures in a row reached the threshold.
    Opened,
    /// Its probe failed: open again for the whole time.
    Reopened,
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
    /// A probe is under way, since then (one older than [`PROBE_STALE_MS`] is taken as
    /// lost: its sender never reported).
    probing: Option<Millis>,
}

/// How long a probe may be under way before another may go: longer than any attempt.
const PROBE_STALE_MS: Millis = 600_000;

impl Breaker {
    /// Whether a probe is under way at `now`.
    fn probe_under_way(&self, now: Millis) -> bool {
        self.probing
            .is_some_and(|at| now.saturating_sub(at) < PROBE_STALE_MS)
    }
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
            Some(
                b @ Breaker {
                    open_until: Some(until),
                    ..
                },
            ) => {
                if now >= *until && !b.probe_under_way(now) {
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
            Some(until) if now >= until && !b.probe_under_way(now) => {
                b.probing = Some(now);
                Gate::Probe
            }
            Some(_) => Gate::Open,
        }
    }

    /// The relay answered (accepted, or refused for good): its breaker closes. True when it
    /// was open (the caller says so in the log).
    pub fn passed(&self, relay: &str) -> bool {
        self.locked()
            .remove(relay)
            .is_some_and(|b| b.open_until.is_some())
    }

    /// A transient failure: one more in a row; the breaker opens at `threshold` (a failed
    /// probe opens it again at once). `probe`: this caller held the probe (`admit` answered
    /// `Probe`); a failure of another send (one let through while every transport rested,
    /// or as the last chance) leaves a probe under way its own. Says whether this failure
    /// opened the breaker, or opened it again (its probe).
    pub fn failed(
        &self,
        relay: &str,
        now: Millis,
        threshold: u32,
        open_ms: Millis,
        probe: bool,
    ) -> Opening {
        let mut map = self.locked();
        let b = map.entry(relay.to_string()).or_default();
        // A probe's outcome that comes after another send closed the breaker (or a newer
        // probe began) is one failure like any other.
        let probe = probe && b.probing.is_some();
        b.failures = b.failures.saturating_add(1);
        let was_open = b.open_until.is_some();
        let opens = probe || b.failures >= threshold.max(1);
        if opens {
            b.open_until = Some(now.saturating_add(open_ms));
        }
        if probe {
            b.probing = None;
        }
        match (opens, probe, was_open) {
            (true, true, _) => Opening::Reopened,
            (true, false, false) => Opening::Opened,
            _ => Opening::None,
        }
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
            b.probing = None;
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
            assert_eq!(b.failed("r", 0, 5, 30_000, false), Opening::None);
            assert_eq!(b.peek("r", 0), Gate::Closed);
        }
        assert_eq!(b.failed("r", 1_000, 5, 30_000, false), Opening::Opened);
        assert_eq!(b.admit("r", 1_000), Gate::Open);
        assert_eq!(b.admit("r", 30_999), Gate::Open);
        // Its time is up: one probe, the others still skip it.
        assert_eq!(b.peek("r", 31_000), Gate::Probe);
        assert_eq!(b.admit("r", 31_000), Gate::Probe);
        assert_eq!(b.admit("r", 31_000), Gate::Open);
        assert_eq!(b.peek("r", 31_000), Gate::Open);
        // Another send's failure meanwhile (let through as the last chance) leaves the
        // probe under way its own: nobody else probes.
        assert_eq!(
            b.failed("r", 31_500, 5, 30_000, false),
            Opening::None,
            "already open: said once"
        );
        assert_eq!(b.admit("r", 61_500), Gate::Open);
        // A failed probe opens it again for the whole time.
        assert_eq!(b.failed("r", 32_000, 5, 30_000, true), Opening::Reopened);
        assert_eq!(b.admit("r", 61_999), Gate::Open);
        assert_eq!(b.admit("r", 62_000), Gate::Probe);
        assert!(b.passed("r"), "the closing is said");
        assert_eq!(b.admit("r", 62_000), Gate::Closed);
        // A success in between resets the count.
        for _ in 0..4 {
            b.failed("r", 0, 5, 30_000, false);
        }
        assert!(!b.passed("r"), "it never opened: nothing to say");
        b.failed("r", 0, 5, 30_000, false);
        assert_eq!(b.peek("r", 0), Gate::Closed);
        // A probe let go lets the next message probe.
        for _ in 0..5 {
            b.failed("s", 0, 5, 10, false);
        }
        assert_eq!(b.admit("s", 10), Gate::Probe);
        b.let_go("s");
        assert_eq!(b.admit("s", 10), Gate::Probe);
        // Other relays are not affected.
        assert_eq!(b.peek("t", 0), Gate::Closed);
        // A probe whose sender never reported is taken as lost after a while.
        for _ in 0..5 {
            b.failed("u", 0, 5, 10, false);
        }
        assert_eq!(b.admit("u", 10), Gate::Probe);
        assert_eq!(b.admit("u", 10 + PROBE_STALE_MS - 1), Gate::Open);
        assert_eq!(b.admit("u", 10 + PROBE_STALE_MS), Gate::Probe);
        // A probe's failure that comes after another send closed the breaker is one
        // failure, not a reopening.
        b.passed("u");
        b.failed("u", 0, 5, 10, true);
        assert_eq!(b.peek("u", 0), Gate::Closed);
    }
}
