//! Delivery: per-tenant pooled SMTP connections (our own TCP_NODELAY sockets to SSRF-checked
//! addresses, every read from the relay bounded), at most `max_connections` sessions per
//! tenant, message rendering, and mapping of every failure to one `reason`.

mod bounded;
mod connect;
mod dkim;
mod error;
mod message;
mod pool;
mod qp;
mod target;
mod transact;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Starttls};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::net_policy::{HostName, HostPolicy, HostRefusal};
pub use message::new_message_id;
use message::render;
use pool::{Idle, TenantPool, IDLE_MAX};

pub(crate) use connect::{add_pem_roots, hello_name};
use error::{busy_reply, fail, overflowed, session_refused, smtp_fail, tls_failure, turned_away};
pub use error::{DeliveryError, DeliveryReason, FailureKind};
use transact::{transact, Progress, Stage, TxError};

pub use crate::domain::tenant::TlsMode;
pub use target::{BeforeBody, DkimSigner, MailerSetupError, Outgoing, SmtpAuth, SmtpTarget};

/// A message's bytes, and what must hold before they leave.
type Body<'a> = (&'a [u8], Option<&'a dyn BeforeBody>);

/// The delivery service. Cloning shares the pools.
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<MailerInner>,
}

struct MailerInner {
    policy: HostPolicy,
    timeout: Duration,
    pool_size: usize,
    implicit_tls: tokio_rustls::TlsConnector,
    pools: Mutex<HashMap<String, Arc<TenantPool>>>,
    connections_opened: std::sync::atomic::AtomicU64,
    /// The server is stopping: a session a send is done with is closed at once, with its
    /// QUIT awaited where the send ran (a sync mint's, on an HTTP worker that stops next).
    closing: std::sync::atomic::AtomicBool,
}

/// A pooled connection used this recently is reused without a NOOP probe; if it turns out
/// dead before DATA, the message goes once more on a fresh connection.
const FRESH: Duration = Duration::from_secs(5);

impl Mailer {
    pub fn new(
        policy: HostPolicy,
        timeout: Duration,
        pool_size: usize,
        extra_roots: &[PathBuf],
    ) -> Result<Mailer, MailerSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for path in extra_roots {
            add_pem_roots(&mut roots, path).map_err(|message| {
                MailerSetupError::RootCertificate {
                    path: path.clone(),
                    message,
                }
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| MailerSetupError::RootCertificate {
                path: PathBuf::new(),
                message: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Mailer {
            inner: Arc::new(MailerInner {
                policy,
                timeout,
                pool_size,
                implicit_tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
                pools: Mutex::new(HashMap::new()),
                connections_opened: std::sync::atomic::AtomicU64::new(0),
                closing: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    pub fn policy(&self) -> &HostPolicy {
        &self.inner.policy
    }

    /// SMTP connections opened since start (for benchmarks and metrics).
    pub fn connections_opened(&self) -> u64 {
        self.inner
            .connections_opened
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forget a tenant's pooled connections, its fallback relay's too (its settings changed
    /// or it was deleted).
    pub fn forget(&self, tenant_id: &str) {
        if let Ok(mut pools) = self.inner.pools.lock() {
            pools.remove(tenant_id);
            pools.remove(&format!("{tenant_id}/fallback"));
        }
    }

    /// The bound on one whole delivery (`smtp.timeout_seconds`).
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Send one message on one session, finished by `deadline` (the caller's whole budget:
    /// resolution, connect, TLS, AUTH and DATA all count). `sessions`: how many sessions the
    /// caller lets this relay have now (its window) — so many idle connections may be kept
    /// for a moment between two messages (`smtp.pool_size` of them for longer).
    ///
    /// `setup_by`: when set (another relay waits to take the message), a session that has not
    /// got as far as sending the message by then is given up (a transient failure that sent
    /// nothing), so a relay that hangs leaves the other one time.
    pub async fn send(
        &self,
        target: &SmtpTarget,
        msg: &Outgoing<'_>,
        (deadline, setup_by): (tokio::time::Instant, Option<tokio::time::Instant>),
        sessions: usize,
    ) -> Result<(), DeliveryError> {
        let (envelope, mut bytes) = render(target, msg)?;
        if let Some(d) = msg.dkim {
            bytes = dkim::sign_off_worker(bytes, d, deadline).await?;
        }
        let progress = Progress::default();
        let sending = self.resolve_and_send(
            target,
            &envelope,
            (&bytes, msg.before_body),
            &progress,
            sessions,
        );
        let bounded = async {
            tokio::pin!(sending);
            if let Some(by) = setup_by {
                tokio::select! {
                    r = &mut sending => return r,
                    _ = tokio::time::sleep_until(by) => {}
                }
                if let Some(e) = progress.cut_while_asking() {
                    return Err(e);
                }
                if !progress.started.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(DeliveryError::new(
                        DeliveryReason::Timeout,
                        FailureKind::SessionRefused,
                        "the relay did not take a session in its share of the time",
                    ));
                }
                // In its transaction but not yet at the message (a relay slow at MAIL, RCPT
                // or DATA): nothing was sent, and the other relay keeps its share too. Once
                // the body is out, the rest of the time is the relay's to answer it.
                if !progress.body.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(DeliveryError::new(
                        DeliveryReason::Timeout,
                        FailureKind::Transient,
                        "the relay did not take the message in its share of the time",
                    ));
                }
            }
            sending.await
        };
        match tokio::time::timeout_at(deadline, bounded).await {
            Ok(r) => r,
            Err(_) if progress.cut_while_asking().is_some() => Err(DeliveryError::not_begun()),
            Err(_) => {
                let in_transaction = progress.started.load(std::sync::atomic::Ordering::SeqCst);
                let body_out = progress.body.load(std::sync::atomic::Ordering::SeqCst);
                // A session that did not get as far as a transaction in time (connect,
                // greeting, TLS, AUTH): the relay is slow to take more sessions. One stopped
                // before the body (at MAIL, RCPT or DATA) sent nothing: another relay may take
                // the message, and its send is given back. One that sent the body and got no
                // answer may have delivered it: unknown.
                Err(DeliveryError::transient(
                    DeliveryReason::Timeout,
                    "delivery exceeded smtp.timeout_seconds",
                )
                .classed(true, !in_transaction)
                .maybe_delivered(body_out)
                .outcome_unknown(body_out))
            }
        }
    }

    /// Connect, TLS and AUTH to a relay and say goodbye, sending nothing (`check_relay`,
    /// API.md §18.8), within the mailer's timeout.
    pub async fn check(&self, target: &SmtpTarget) -> Result<(), DeliveryError> {
        let attempt = async {
            let (name, addrs) = self.resolve(target).await?;
            let (mut conn, _) = self.connect(target, &name, &addrs).await?;
            conn.quit().await.ok();
            Ok(())
        };
        match tokio::time::timeout(self.timeout(), attempt).await {
            Ok(r) => r,
            Err(_) => Err(DeliveryError::transient(
                DeliveryReason::Timeout,
                "the relay check exceeded smtp.timeout_seconds",
            )),
        }
    }

    /// Close idle connections past their idle time, and forget pools that have none left
    /// (API.md §6.27: whether or not their tenant sends again). Returns how many closed.
    pub fn close_idle(&self) -> usize {
        self.close_idle_older_than(IDLE_MAX)
    }

    fn close_idle_older_than(&self, max: Duration) -> usize {
        let gone = self.take_idle(|idle, long| pool::trim(idle, max, usize::MAX, long));
        let closed = gone.len();
        pool::say_goodbye(gone);
        closed
    }

    /// Close every idle connection, each with a `QUIT` (the server stopping: API.md §11.5),
    /// within a moment, and from now on every connection a send is done with. Returns how
    /// many closed.
    pub async fn close_all_idle(&self) -> usize {
        self.inner
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let gone = self.take_idle(|idle, _| idle.drain(..).map(|i| i.conn).collect());
        let closed = gone.len();
        pool::say_goodbye_now(gone).await;
        closed
    }

    /// The idle connections `pick` takes out of each pool (given its idle ones and how many
    /// it keeps long), and forget pools that have none left.
    fn take_idle(
        &self,
        mut pick: impl FnMut(&mut Vec<Idle>, usize) -> Vec<AsyncSmtpConnection>,
    ) -> Vec<AsyncSmtpConnection> {
        let Ok(mut pools) = self.inner.pools.lock() else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        pools.retain(|_, p| {
            let Ok(mut idle) = p.idle.lock() else {
                return true;
            };
            let long = p.long_kept(self.inner.pool_size);
            gone.extend(pick(&mut idle, long));
            // A pool is forgotten only when nothing uses it: sends under way hold it (the
            // map's lock, held here, is the one `pool_for` clones it under) and put their
            // connections back into it.
            !idle.is_empty() || Arc::strong_count(p) > 1
        });
        gone
    }

    async fn resolve_and_send(
        &self,
        target: &SmtpTarget,
        envelope: &lettre::address::Envelope,
        body: Body<'_>,
        progress: &Progress,
        sessions: usize,
    ) -> Result<(), DeliveryError> {
        let (name, addrs) = self.resolve(target).await?;
        let pool = self.pool_for(target);
        self.send_on_pool(
            &pool,
            target,
            (&name, &addrs),
            (envelope, body),
            progress,
            sessions,
        )
        .await
    }

    /// The relay's name and addresses, as the host policy allows them (at every connect).
    async fn resolve(
        &self,
        target: &SmtpTarget,
    ) -> Result<(HostName, Vec<SocketAddr>), DeliveryError> {
        self.inner
            .policy
            .check(&target.host, target.port, target.tls == TlsMode::None)
            .await
            .map_err(|r| match r {
                HostRefusal::Unresolvable => {
                    fail(DeliveryReason::Unreachable, "host does not resolve")
                }
                other => fail(DeliveryReason::HostNotAllowed, other),
            })
    }

    fn pool_for(&self, target: &SmtpTarget) -> Arc<TenantPool> {
        let fresh = || Arc::new(TenantPool::new(target.version));
        let Ok(mut pools) = self.inner.pools.lock() else {
            return fresh();
        };
        match pools.get(&target.tenant_id) {
            Some(p) if p.version == target.version => Arc::clone(p),
            _ => {
                let p = fresh();
                pools.insert(target.tenant_id.clone(), Arc::clone(&p));
                p
            }
        }
    }

    async fn send_on_pool(
        &self,
        pool: &TenantPool,
        target: &SmtpTarget,
        (name, addrs): (&HostName, &[SocketAddr]),
        (envelope, body): (&lettre::address::Envelope, Body<'_>),
        progress: &Progress,
        sessions: usize,
    ) -> Result<(), DeliveryError> {
        let mut reused = None;
        loop {
            let candidate = pool.idle.lock().ok().and_then(|mut idle| {
                let pos = idle
                    .iter()
                    .rposition(|i| addrs.contains(&i.addr) && i.since.elapsed() < IDLE_MAX)?;
                Some(idle.swap_remove(pos))
            });
            let Some(mut c) = candidate else { break };
            // Used moments ago: skip the NOOP round trip; a dead one is caught before DATA.
            if c.since.elapsed() < FRESH || c.conn.test_connected().await {
                reused = Some((c.conn, c.addr));
                break;
            }
            c.conn.abort().await;
        }
        let was_reused = reused.is_some();
        let (mut conn, addr) = match reused {
            Some(c) => c,
            None => self
                .connect(target, name, addrs)
                .await
                .inspect_err(|e| pool.saw_refusal(e))?,
        };
        progress
            .started
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut result = transact(&mut conn, envelope, body, progress).await;
        if was_reused {
            if let Err(TxError::Smtp(Stage::Mail, e)) = &result {
                if !e.is_permanent() {
                    // The pooled connection was dead (or closing) before DATA: nothing was
                    // sent on it. Once more on a fresh one.
                    conn.abort().await;
                    let (c, a) = self.connect(target, name, addrs).await?;
                    conn = c;
                    result = transact(&mut conn, envelope, body, progress).await;
                    return self.finish(pool, conn, a, result, sessions).await;
                }
            }
        }
        self.finish(pool, conn, addr, result, sessions).await
    }

    /// Keep a healthy connection for reuse; map a failure to its reason.
    async fn finish(
        &self,
        pool: &TenantPool,
        mut conn: AsyncSmtpConnection,
        addr: SocketAddr,
        result: Result<(), TxError>,
        sessions: usize,
    ) -> Result<(), DeliveryError> {
        match result {
            Ok(()) => {
                if self.inner.closing.load(std::sync::atomic::Ordering::SeqCst) {
                    if !conn.has_broken() {
                        pool::say_goodbye_now(vec![conn]).await;
                    }
                } else if !conn.has_broken() {
                    let mut gone = Vec::new();
                    if let Ok(mut idle) = pool.idle.lock() {
                        // Between two messages of a busy relay a session is idle for a
                        // moment: as many as the relay's window may wait for their next
                        // message (no TLS handshake per message), `smtp.pool_size` longer.
                        let long = pool.long_kept(self.inner.pool_size);
                        let keep = sessions.max(long);
                        gone = pool::trim(&mut idle, IDLE_MAX, keep, long);
                        if idle.len() < keep {
                            idle.push(Idle {
                                conn,
                                addr,
                                since: Instant::now(),
                            });
                        } else {
                            gone.push(conn);
                        }
                    }
                    pool::say_goodbye(gone);
                }
                Ok(())
            }
            Err(TxError::NotBegun) => {
                // Mid-DATA a QUIT would be a line of the message, never answered: the
                // socket is closed without one, and a relay keeps nothing of a DATA that
                // never got its final `.`.
                drop(conn);
                Err(DeliveryError::not_begun())
            }
            Err(TxError::NoSmtpUtf8) => {
                conn.abort().await;
                // The relay refused nothing: the code says so, and what to do (API.md §18.8).
                Err(fail(
                    DeliveryReason::Rejected,
                    "an address with non-ASCII characters before the @ needs SMTPUTF8, which the relay does not offer",
                )
                .with_code(crate::domain::delivery::NO_SMTPUTF8))
            }
            Err(TxError::Smtp(stage, e)) => {
                // A reply (4xx/5xx) means the server refused: nothing was delivered. So does
                // any failure before the body went out. A client-side refusal (e.g. the
                // server lacks SMTPUTF8) happens before sending.
                let refused =
                    e.is_permanent() || e.is_transient() || e.is_client() || stage != Stage::Body;
                // No reply at all (the connection broke or closed under us): the relay
                // was lost, it refused nothing.
                let reason = if e.is_timeout() {
                    DeliveryReason::Timeout
                } else if e.is_permanent() || e.is_transient() || e.is_client() {
                    DeliveryReason::Rejected
                } else {
                    DeliveryReason::Unreachable
                };
                let err = smtp_fail(reason, &e);
                // A broken connection or a timeout: worth another try; a client-side
                // refusal is not.
                let transient = if !e.is_permanent() && !e.is_transient() && !overflowed(&e) {
                    !e.is_client()
                } else {
                    err.is_transient()
                };
                conn.abort().await;
                // The body went out and no reply came (a timeout, a dropped connection):
                // nobody can know whether the relay kept it.
                Err(err
                    .classed(transient, session_refused(&e, false))
                    .maybe_delivered(!refused)
                    .outcome_unknown(!refused))
            }
        }
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests;
