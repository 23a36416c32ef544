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

/// A pool let go (its tenant's relay settings changed, or the mailer went) ends its idle
/// sessions with a `QUIT` too.
impl Drop for TenantPool {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().map(std::mem::take).unwrap_or_default();
        say_goodbye(idle.into_iter().map(|i| i.conn).collect());
    }
}

/// How long a session let go may take to answer its `QUIT`.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// Let idle connections go: those past their idle time, those beyond `long` (the
/// pool's [`TenantPool::long_kept`]) that waited longer than a moment for the next
/// message, and the oldest beyond `keep` (the relay's window shrank). Returns those that
/// went, for [`say_goodbye`].
pub(super) fn trim(
    idle: &mut Vec<Idle>,
    max_idle: Duration,
    keep: usize,
    long: usize,
) -> Vec<AsyncSmtpConnection> {
    let (kept, mut gone): (Vec<Idle>, Vec<Idle>) =
        idle.drain(..).partition(|i| i.since.elapsed() < max_idle);
    *idle = kept;
    // Oldest first: the surplus beyond the pool that has waited longest goes first.
    idle.sort_by_key(|i| i.since);
    let surplus_gone = idle
        .iter()
        .take(idle.len().saturating_sub(long))
        .take_while(|i| i.since.elapsed() >= SURPLUS_IDLE)
        .count();
    gone.extend(idle.drain(..surplus_gone));
    let over = idle.len().saturating_sub(keep.max(long));
    gone.extend(idle.drain(..over));
    gone.into_iter().map(|i| i.conn).collect()
}

/// Close sessions let go with a `QUIT` first, in the background, each within
/// [`QUIT_WAIT`] (RFC 5321 §4.1.1.10: a client sends `QUIT` before it closes; a relay may
/// count a session that just ends as lost — found by an audit against Postfix). Outside a
/// runtime they are just closed.
pub(super) fn say_goodbye(conns: Vec<AsyncSmtpConnection>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for mut conn in conns {
        rt.spawn(async move {
            let _ = tokio::time::timeout(QUIT_WAIT, conn.abort()).await;
        });
    }
}

/// Close sessions with a `QUIT` first, all at once, within [`QUIT_WAIT`] together (the
/// server stopping).
pub(super) async fn say_goodbye_now(conns: Vec<AsyncSmtpConnection>) {
    let quits = conns.into_iter().map(|mut conn| async move {
        let _ = tokio::time::timeout(QUIT_WAIT, conn.abort()).await;
    });
    futures_util::future::join_all(quits).await;
}
