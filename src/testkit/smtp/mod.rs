#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A real SMTP server for tests and benchmarks: TCP on loopback, STARTTLS or implicit TLS with a test CA
//! made at test time, AUTH PLAIN/LOGIN/XOAUTH2, and the received messages kept for reading.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

pub use super::mime::first_code;
use super::mime::{decode_words, header_in, parts};

mod session;
use session::handle;

pub const SMTP_USER: &str = "mailer@acme.example";
pub const SMTP_PASS: &str = "smtp-Pa55word-never-logged";

#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    pub user: String,
    pub tls: bool,
}

impl Received {
    /// The code: the first run of 4-10 ASCII digits in the text part.
    pub fn code(&self) -> String {
        let body = self
            .text()
            .unwrap_or_else(|| panic!("no text part: {}", self.data));
        first_code(&body).unwrap_or_else(|| panic!("no code in message: {}", self.data))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        header_in(self.data.split("\r\n\r\n").next()?, name)
    }

    /// The subject, RFC 2047 encoded words decoded.
    pub fn subject(&self) -> Option<String> {
        self.header("Subject").map(|s| decode_words(&s))
    }

    /// The decoded body of the first part of this content type (`text/plain`, `text/html`),
    /// looking inside a multipart body.
    pub fn part(&self, kind: &str) -> Option<String> {
        parts(&self.data)
            .into_iter()
            .find(|(ct, _)| ct.to_ascii_lowercase().starts_with(kind))
            .map(|(_, b)| b)
    }

    pub fn text(&self) -> Option<String> {
        self.part("text/plain")
    }

    pub fn html(&self) -> Option<String> {
        self.part("text/html")
    }

    /// Content types of the leaf parts, in order.
    pub fn content_types(&self) -> Vec<String> {
        parts(&self.data).into_iter().map(|(ct, _)| ct).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// 550 to every RCPT (a permanent refusal).
    RejectRecipients,
    /// 550 to every RCPT, its text in Latin-1 (`Benutzer unbekannt ü`): not UTF-8.
    RejectRecipientsInLatin1,
    /// Accept TCP and never answer.
    Tarpit,
    /// Accept TCP and close it at once (a relay that is down).
    Down,
    /// A hostile relay: `220 ` and then bytes without a line end, as fast as they go.
    Flood,
    /// A relay that does not offer STARTTLS (its plain EHLO answer lacks it).
    NoStarttls,
    /// Inside TLS, the answer to the EHLO after STARTTLS is one 5 KiB line (over what a
    /// reply line may hold, under what the TLS records around it weigh).
    LongLineUnderTls,
    /// The answer to RCPT is 200 lines of 1 000 characters (200 KB in all: over the 64 KiB a
    /// reply may hold).
    LongLinesAtRcpt,
    /// Long reply lines within the 4 KiB a line may hold (longer than the 1 000 bytes lettre
    /// reads): inside TLS, the EHLO answer starts with a line of 4 096 bytes ending in
    /// two-byte characters, and the answer to RCPT is one line of 3 000 characters.
    LongLinesWithinBound,
    /// Inside TLS, the answer to the EHLO after STARTTLS is 80 KiB of short lines (over the
    /// 64 KiB a reply may hold).
    LongReplyUnderTls,
    /// Keep each message at its final `.` (it counts as received) and never answer: the
    /// sender cannot know whether it was delivered.
    KeepAndStall,
    /// Keep each message at its final `.` (it counts as received) and close the connection
    /// without a word: the sender cannot know whether it was delivered.
    KeepAndDrop,
    /// Take the session and `MAIL`, then never answer `RCPT` (a relay checking recipients
    /// too slowly): nothing of the message was sent.
    StallAtRcpt,
}

struct State {
    messages: Mutex<Vec<Received>>,
    notify: Notify,
    connections: AtomicUsize,
    mode: Mutex<Mode>,
    /// How long the relay takes to accept each message (after the final `.`).
    delay: Mutex<Duration>,
    /// Sessions between DATA and their reply right now, and the most ever seen.
    in_data: AtomicUsize,
    max_in_data: AtomicUsize,
    /// Messages still to be answered `451` (a transient refusal) at the end of DATA.
    tempfail: AtomicUsize,
    /// Bytes a flooding relay has written.
    flooded: AtomicUsize,
    /// NOOP commands received (a client probing pooled connections).
    noops: AtomicUsize,
    /// QUIT commands received.
    quits: AtomicUsize,
    /// `RCPT` commands left unanswered ([`Mode::StallAtRcpt`]).
    stalled_at_rcpt: AtomicUsize,
    /// Hang up right after accepting a message, without a word (a relay that ends idle
    /// sessions early).
    hang_up_after_message: std::sync::atomic::AtomicBool,
    /// The most sessions served at once; beyond it a new session gets `421` at its greeting
    /// and is closed (a relay that limits its sessions).
    session_limit: Mutex<Option<usize>>,
    /// Sessions open right now, and those turned away with `421`.
    active: AtomicUsize,
    turned_away: AtomicUsize,
    /// Who may log in with SASL XOAUTH2: (user, token) → accepted. None: nobody.
    xoauth2: Mutex<Option<TokenCheck>>,
    xoauth2_logins: AtomicUsize,
    xoauth2_refusals: AtomicUsize,
    /// How many `334` challenges carrying the error come before a refused token's `535`:
    /// 0 as Microsoft 365 answers, 1 as Gmail does (RFC 7628 §3.2.3: the client answers
    /// each with an empty line), 2 a relay that asks again. An answer other than the empty
    /// line is counted and gets `501`; `*` cancels (RFC 4954 §4), counted too.
    xoauth2_challenges: AtomicUsize,
    sasl_misanswers: AtomicUsize,
    sasl_cancels: AtomicUsize,
    /// Open (true) or closed: a closed gate keeps each message at its final `.` until it
    /// opens (a relay that has not answered yet, for as long as a test needs).
    gate: tokio::sync::watch::Sender<bool>,
}

/// Whether a bearer token logs this user in.
pub type TokenCheck = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Counts a session as open until dropped.
struct Active<'a>(&'a State);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct TestCa {
    pub ca_pem: String,
    pub leaf_der: CertificateDer<'static>,
    pub ca_der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

pub fn make_ca() -> TestCa {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "otpmint test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    TestCa {
        ca_pem: ca_cert.pem(),
        leaf_der: leaf_cert.der().clone(),
        ca_der: ca_cert.der().clone(),
        key_der: leaf_key.serialize_der(),
    }
}

/// A server's TLS for tests: an acceptor with a fresh CA's leaf for `localhost` and
/// 127.0.0.1, and the CA's PEM in a temporary directory (kept as long as `dir`).
pub struct TestTls {
    pub acceptor: TlsAcceptor,
    pub ca_path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl TestTls {
    pub fn fresh() -> TestTls {
        let ca = make_ca();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca.ca_pem).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![ca.leaf_der.clone(), ca.ca_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ca.key_der.clone())),
            )
            .unwrap();
        TestTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            ca_path,
            dir,
        }
    }

    /// A fresh certificate authority and a listener on a free loopback port.
    pub async fn listen() -> (TcpListener, u16, TestTls) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port, TestTls::fresh())
    }
}

/// A byte stream a test server speaks over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct SmtpServer {
    pub port: u16,
    pub ca_path: PathBuf,
    state: Arc<State>,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        Self::start_with(false).await
    }

    /// `implicit`: TLS from the first byte (port-465 style) instead of STARTTLS.
    pub async fn start_with(implicit: bool) -> SmtpServer {
        let (listener, port, keys) = TestTls::listen().await;
        let (acceptor, ca_path, dir) = (keys.acceptor, keys.ca_path, keys.dir);
        let state = Arc::new(State {
            messages: Mutex::new(Vec::new()),
            notify: Notify::new(),
            connections: AtomicUsize::new(0),
            mode: Mutex::new(Mode::Normal),
            delay: Mutex::new(Duration::ZERO),
            in_data: AtomicUsize::new(0),
            max_in_data: AtomicUsize::new(0),
            tempfail: AtomicUsize::new(0),
            flooded: AtomicUsize::new(0),
            noops: AtomicUsize::new(0),
            quits: AtomicUsize::new(0),
            stalled_at_rcpt: AtomicUsize::new(0),
            hang_up_after_message: std::sync::atomic::AtomicBool::new(false),
            session_limit: Mutex::new(None),
            active: AtomicUsize::new(0),
            turned_away: AtomicUsize::new(0),
            xoauth2: Mutex::new(None),
            xoauth2_logins: AtomicUsize::new(0),
            xoauth2_refusals: AtomicUsize::new(0),
            xoauth2_challenges: AtomicUsize::new(0),
            sasl_misanswers: AtomicUsize::new(0),
            sasl_cancels: AtomicUsize::new(0),
            gate: tokio::sync::watch::Sender::new(true),
        });
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = Arc::clone(&st);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = handle(tcp, st, acceptor, implicit).await;
                });
            }
        });
        SmtpServer {
            port,
            ca_path,
            state,
            _dir: dir,
        }
    }

    /// Accept SASL XOAUTH2 logins this check accepts (an OAuth2 token endpoint's tokens).
    pub fn accept_xoauth2(&self, check: TokenCheck) {
        *self.state.xoauth2.lock().unwrap() = Some(check);
    }

    /// XOAUTH2 logins accepted and refused so far.
    pub fn xoauth2_counts(&self) -> (usize, usize) {
        (
            self.state.xoauth2_logins.load(Ordering::SeqCst),
            self.state.xoauth2_refusals.load(Ordering::SeqCst),
        )
    }

    /// Refuse XOAUTH2 tokens after this many `334` challenges that carry the error: 1 as
    /// Gmail does, 2 as a relay that asks again; 0 (the default) as Microsoft 365 does
    /// (`535` at once).
    pub fn refuse_xoauth2_after_challenges(&self, n: usize) {
        self.state.xoauth2_challenges.store(n, Ordering::SeqCst);
    }

    /// Answers to an XOAUTH2 error challenge that were neither the empty line RFC 7628 asks
    /// nor a cancel; and the cancels (`*`).
    pub fn sasl_answers_off(&self) -> (usize, usize) {
        (
            self.state.sasl_misanswers.load(Ordering::SeqCst),
            self.state.sasl_cancels.load(Ordering::SeqCst),
        )
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Make the relay take `d` to accept each message (a real relay takes 50-500 ms).
    pub fn set_delay(&self, d: Duration) {
        *self.state.delay.lock().unwrap() = d;
    }

    /// The most sessions that were between DATA and its reply at the same time.
    pub fn max_concurrent_in_data(&self) -> usize {
        self.state.max_in_data.load(Ordering::SeqCst)
    }

    /// Answer the next `n` messages with `451` (try again later).
    pub fn tempfail_next(&self, n: usize) {
        self.state.tempfail.store(n, Ordering::SeqCst);
    }

    /// Close each session right after accepting its message.
    pub fn set_hang_up_after_message(&self, on: bool) {
        self.state.hang_up_after_message.store(on, Ordering::SeqCst);
    }

    /// Serve at most `n` sessions at once; the next ones get `421` at their greeting.
    pub fn set_session_limit(&self, n: Option<usize>) {
        *self.state.session_limit.lock().unwrap() = n;
    }

    /// Keep every message at its final `.`, unanswered, until [`SmtpServer::release`].
    pub fn hold(&self) {
        self.state.gate.send_replace(false);
    }

    /// Answer the messages [`SmtpServer::hold`] kept, and the next ones as usual.
    pub fn release(&self) {
        self.state.gate.send_replace(true);
    }

    /// Sessions turned away with `421` so far.
    pub fn turned_away(&self) -> usize {
        self.state.turned_away.load(Ordering::SeqCst)
    }

    /// Sessions open right now (a client's pooled idle connections included).
    pub fn open_sessions(&self) -> usize {
        self.state.active.load(Ordering::SeqCst)
    }

    /// Sessions between DATA and their reply right now.
    pub fn in_data(&self) -> usize {
        self.state.in_data.load(Ordering::SeqCst)
    }

    /// NOOP commands received so far.
    pub fn noops(&self) -> usize {
        self.state.noops.load(Ordering::SeqCst)
    }

    /// QUIT commands received so far (sessions a client ended properly).
    pub fn quits(&self) -> usize {
        self.state.quits.load(Ordering::SeqCst)
    }

    /// `RCPT` commands left unanswered ([`Mode::StallAtRcpt`]).
    pub fn stalled_at_rcpt(&self) -> usize {
        self.state.stalled_at_rcpt.load(Ordering::SeqCst)
    }

    /// Bytes written by the flooding mode so far.
    pub fn flooded_bytes(&self) -> usize {
        self.state.flooded.load(Ordering::SeqCst)
    }

    pub fn messages(&self) -> Vec<Received> {
        self.state.messages.lock().unwrap().clone()
    }

    /// Take every message received so far (the benchmark reads codes this way).
    pub fn drain(&self) -> Vec<Received> {
        std::mem::take(&mut *self.state.messages.lock().unwrap())
    }

    pub fn count_to(&self, to: &str) -> usize {
        self.messages()
            .iter()
            .filter(|m| m.to.iter().any(|t| t == to))
            .count()
    }

    /// Wait until at least `n` messages went to `to`; returns the `n`-th.
    pub async fn wait_for(&self, to: &str, n: usize) -> Received {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let notified = self.state.notify.notified();
            let list: Vec<Received> = self
                .messages()
                .into_iter()
                .filter(|m| m.to.iter().any(|t| t == to))
                .collect();
            if list.len() >= n {
                return list[n - 1].clone();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no message #{n} to {to} within 15 s");
            }
        }
    }
}

/// A loopback listener that only counts connections (the SSRF canary).
pub struct Canary {
    pub addr: SocketAddr,
    count: Arc<AtomicUsize>,
}

impl Canary {
    pub async fn start() -> Canary {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((_s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
            }
        });
        Canary { addr, count }
    }
    pub fn hits(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}
