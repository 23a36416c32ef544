//! A tenant's pool of idle relay sessions: kept for the next message of a busy relay, for
//! a moment, and `smtp.pool_size` of them for longer — none for longer to a relay that
//! counts its sessions (it turned one away), so that the sessions it allows serve work,
//! also of other instances (API.md §7, §11.1).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::AsyncSmtpConnection;

use crate::domain::delivery::DeliveryError;

/// How long an idle connection is kept at most.
pub(super) const IDLE_MAX: Duration = Duration::from_secs(50);
/// Idle connections beyond `smtp.pool_size` (kept while the relay's window is busy) go once
/// they waited this long for a next message.
pub(super) const SURPLUS_IDLE: Duration = Duration::from_secs(2);

pub(super) struct Idle {
    pub(super) conn: AsyncSmtpConnection,
    pub(super) addr: SocketAddr,
    pub(super) since: Instant,
}

pub(super) struct TenantPool {
    pub(super) version: i64,
    /// Connections kept for reuse (at most `smtp.pool_size`).
    pub(super) idle: Mutex<Vec<Idle>>,
    /// The relay turned a session away: it counts sessions, and other instances (or this
    /// one's next burst) need them, so idle ones are kept only a moment (`SURPLUS_IDLE`),
    /// not `smtp.pool_size` of them for `IDLE_MAX` (API.md §11.1, §7).
    limited: AtomicBool,
}

impl TenantPool {
    /// An empty pool for the relay settings of `version`.
    pub(super) fn new(version: i64) -> TenantPool {
        TenantPool {
            version,
            idle: Mutex::new(Vec::new()),
            limited: AtomicBool::new(false),
        }
    }

    /// A connect that failed: a session turned away marks the relay as one that counts.
    pub(super) fn saw_refusal(&self, e: &DeliveryError) {
        if e.is_refused() {
            self.limited.store(true, Ordering::Relaxed);
        }
    }

    /// Idle connections kept past a moment: `smtp.pool_size`, or none to a relay that
    /// counts its sessions.
    pub(super) fn long_kept(&self, pool_size: usize) -> usize {
        if self.limited.load(Ordering::Relaxed) {
            0
        } else {
            pool_size
        }
    }
}

/// Let idle connections go: those past their idle time, those beyond `long` (the
/// pool's [`TenantPool::long_kept`]) that waited longer than a moment for the next
/// message, and the oldest beyond `keep` (the relay's window shrank). Returns how many
/// went.
pub(super) fn trim(idle: &mut Vec<Idle>, max_idle: Duration, keep: usize, long: usize) -> usize {
    let before = idle.len();
    idle.retain(|i| i.since.elapsed() < max_idle);
    // Oldest first: the surplus beyond the pool that has waited longest goes first.
    idle.sort_by_key(|i| i.since);
    let surplus_gone = idle
        .iter()
        .take(idle.len().saturating_sub(long))
        .take_while(|i| i.since.elapsed() >= SURPLUS_IDLE)
        .count();
    idle.drain(..surplus_gone);
    let over = idle.len().saturating_sub(keep.max(long));
    idle.drain(..over);
    before - idle.len()
}
