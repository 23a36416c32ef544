//! Waiting at start for a PostgreSQL server that is not up yet (`database.start_wait_seconds`):
//! compose and Kubernetes start the database and otpmint together.

use std::net::ToSocketAddrs;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ::postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::storage::error::pg_text;
use crate::storage::StoreError;

/// Why one try to connect did not get through.
enum Miss {
    /// The client's error.
    Failed(::postgres::Error),
    /// The server took the connection but did not finish the start-up in the try's time
    /// (a server still starting, or a proxy whose database is not there yet).
    NoAnswer(Duration),
    /// The host name does not resolve (yet: a Kubernetes headless service's name appears
    /// when its pod is ready).
    Unresolvable(String),
    /// The try could not be made at all.
    Other(String),
}

impl Miss {
    /// Whether the server may yet come up: worth waiting for.
    fn passing(&self) -> bool {
        match self {
            Miss::Failed(e) => not_up_yet(e),
            Miss::NoAnswer(_) | Miss::Unresolvable(_) => true,
            Miss::Other(_) => false,
        }
    }

    fn text(&self) -> String {
        match self {
            Miss::Failed(e) => pg_text(e),
            Miss::NoAnswer(d) => format!(
                "the server took the connection but did not answer within {} s",
                d.as_secs_f64()
            ),
            Miss::Unresolvable(host) => format!("the host name {host} does not resolve"),
            Miss::Other(m) => m.clone(),
        }
    }
}

/// Whether connecting failed because the server is not up yet (it may be soon): the
/// connection refused, closed, dropped, timed out or unreachable, a socket file not there yet, or the
/// server saying it is starting up, shutting down, has too many clients or takes no
/// connections to the database for now. A refusal by the server (password, database, role)
/// or a TLS failure is not.
fn not_up_yet(e: &::postgres::Error) -> bool {
    use std::io::ErrorKind as K;
    if let Some(db) = e.as_db_error() {
        // 57P03 cannot_connect_now ("the database system is starting up"), 53300
        // too_many_connections, 55000 object_not_in_prerequisite_state (at connection:
        // "database … is not currently accepting connections", a maintenance window's
        // `ALLOW_CONNECTIONS false`; found by the outage audit), 57P01 admin_shutdown and
        // 57P02 crash_shutdown (a server restarting).
        return matches!(
            db.code().code(),
            "57P03" | "53300" | "55000" | "57P01" | "57P02"
        );
    }
    // Closed before the start-up finished: a proxy (Docker's, HAProxy) whose database is not
    // there yet accepts and closes. (So does a port that is not PostgreSQL's at all: that
    // costs the whole wait, with a warning naming it at each try.)
    if e.is_closed() {
        return true;
    }
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::BrokenPipe
                    | K::UnexpectedEof
                    | K::TimedOut
                    | K::AddrNotAvailable
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::NotFound
            )
        })
}

/// A host name of `config` that does not resolve now, if one does not.
fn unresolvable(config: &::postgres::Config) -> Option<String> {
    config.get_hosts().iter().find_map(|h| match h {
        Host::Tcp(name) if name.parse::<std::net::IpAddr>().is_err() => (name.as_str(), 0)
            .to_socket_addrs()
            .is_err()
            .then(|| name.clone()),
        _ => None,
    })
}

/// One try, bounded as a whole by `limit`: the client bounds only the TCP connect, so a
/// server that takes the connection and never answers would hold it for ever. The try runs
/// on a thread of its own, left to end with its connection when it does not answer in time.
fn try_once(
    config: &::postgres::Config,
    tls: &MakeRustlsConnect,
    limit: Duration,
) -> Result<(), Miss> {
    let mut config = config.clone();
    config.connect_timeout(limit);
    let (tls, (tx, rx)) = (tls.clone(), mpsc::channel());
    let probe = config.clone();
    std::thread::Builder::new()
        .name("otpmint-pg-wait".into())
        .spawn(move || {
            let _ = tx.send(probe.connect(tls).map(drop));
        })
        .map_err(|e| Miss::Other(format!("starting a connection attempt: {e}")))?;
    match rx.recv_timeout(limit) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.as_db_error().is_none() && !not_up_yet(&e) => {
            Err(unresolvable(&config).map_or(Miss::Failed(e), Miss::Unresolvable))
        }
        Ok(Err(e)) => Err(Miss::Failed(e)),
        Err(_) => Err(Miss::NoAnswer(limit)),
    }
}

/// Wait, for at most `wait`, until the server takes a connection while it is not up yet
/// ([`Miss::passing`]), warning at each try; each try takes at most `timeout`
/// (`database.timeout_seconds`). Any other failure, or one past `wait`, is returned at once;
/// with no wait there is one try, so a server that is not there fails at once with its reason
/// (also one starting up or full: 57P03, 53300 — the CLI's commands, which never wait, say so
/// at once rather than retrying for `database.timeout_seconds`).
pub(super) fn wait_until_up(
    config: &::postgres::Config,
    tls: &MakeRustlsConnect,
    timeout: Duration,
    wait: Duration,
) -> Result<(), StoreError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        let left = wait.saturating_sub(start.elapsed());
        // At least a second a try, so the last one is not cut short to nothing; with no wait,
        // the one try has the whole timeout.
        let limit = if wait.is_zero() {
            timeout
        } else {
            timeout.min(left.max(Duration::from_secs(1)))
        };
        let miss = match try_once(config, tls, limit) {
            Ok(()) => return Ok(()),
            Err(m) => m,
        };
        // With no wait, one try: its reason at once, not the pool's own timeout after it.
        let left = wait.saturating_sub(start.elapsed());
        if !miss.passing() || left.is_zero() {
            return Err(match miss {
                Miss::Failed(e) => e.into(),
                other => StoreError::Unavailable(other.text()),
            });
        }
        tracing::warn!(
            error = %miss.text(),
            waited_seconds = start.elapsed().as_secs(),
            left_seconds = left.as_secs(),
            "PostgreSQL is not up yet; waiting for it (database.start_wait_seconds)"
        );
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
