#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! A TCP proxy on loopback that can cut: every open connection closed and new ones closed as
//! they arrive, until it is restored (a database that goes away and comes back); or stall:
//! every connection kept open and nothing forwarded either way, as a database that hangs
//! (its host still acknowledges every byte), until it is restored as a restart (the held
//! connections are closed then); or pause: nothing forwarded either way until it resumes,
//! then everything held flows on (a network path that stalls and recovers). Started with [`Proxy::start_reading_commits`], it reads the
//! PostgreSQL protocol its clients speak (refusing TLS, so a client that prefers it speaks
//! plainly) and can end a connection at a COMMIT: after the database answered it, the answer
//! withheld (a commit whose answer was lost), or before the database saw it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a proxy that reads commits does at one (see [`Proxy::at_commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtCommit {
    /// Forward it and its answer.
    Pass = 0,
    /// Forward it, withhold the database's answer and close the connection.
    LoseAnswer = 1,
    /// Close the connection instead of forwarding it.
    Drop = 2,
    /// Close the client's side instead of forwarding it, and hold the database's side open
    /// (a break the database does not notice: its session stays in its transaction).
    Strand = 3,
    /// As `LoseAnswer`, and every other connection closed with it (a break of the network
    /// path: the pool's idle connections go too).
    LoseAll = 4,
}

pub struct Proxy {
    pub port: u16,
    at_commit: Arc<Mutex<Rule>>,
    cut: Arc<AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
    stalled: tokio::sync::watch::Sender<bool>,
    paused: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    /// Forward a free port of 127.0.0.1 to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Proxy {
        Proxy::start_on(0, upstream).await
    }

    /// Forward 127.0.0.1:`port` to `upstream` (a database that comes up where its clients
    /// were told to look).
    pub async fn start_on(port: u16, upstream: String) -> Proxy {
        Proxy::listen(port, upstream, false).await
    }

    /// As [`Proxy::start`], reading the PostgreSQL protocol so that [`Proxy::at_commit`]
    /// applies.
    pub async fn start_reading_commits(upstream: String) -> Proxy {
        Proxy::listen(0, upstream, true).await
    }

    async fn listen(port: u16, upstream: String, reading: bool) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let at_commit = Arc::new(Mutex::new(Rule {
            what: AtCommit::Pass,
            only: None,
        }));
        let generation = tokio::sync::watch::Sender::new(0u64);
        let stalled = tokio::sync::watch::Sender::new(false);
        let paused = tokio::sync::watch::Sender::new(false);
        let (c, g, st, pa) = (
            cut.clone(),
            generation.clone(),
            stalled.clone(),
            paused.clone(),
        );
        let commits = at_commit.clone();
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(down); // "gone": every connection is refused
                    continue;
                }
                let mut gen = g.subscribe();
                let mut stall = st.subscribe();
                let pause = pa.subscribe();
                let upstream = upstream.clone();
                let commits = commits.clone();
                let everyone = g.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    if reading {
                        tokio::select! {
                            _ = read_commits(down, up, commits, everyone) => {}
                            _ = gen.changed() => {}
                        }
                        return;
                    }
                    let (dr, dw) = down.split();
                    let (ur, uw) = up.split();
                    let both = async {
                        tokio::join!(pump(dr, uw, pause.clone()), pump(ur, dw, pause.clone()))
                    };
                    tokio::select! {
                        _ = both => {}
                        _ = gen.changed() => {}
                        // "hung": held open, nothing forwarded, until the next cut or restore
                        _ = async { stall.wait_for(|s| *s).await.is_ok() } => {
                            let _ = gen.changed().await;
                        }
                    }
                });
            }
        });
        Proxy {
            port,
            at_commit,
            cut,
            generation,
            stalled,
            paused,
        }
    }

    /// What to do at every COMMIT from now on, on any connection (a proxy started with
    /// [`Proxy::start_reading_commits`]).
    pub fn at_commit(&self, what: AtCommit) {
        *self.at_commit.lock().unwrap() = Rule { what, only: None };
    }

    /// As [`Proxy::at_commit`], only at the COMMIT of a transaction that ran a statement
    /// whose text holds `marker` (other commits pass).
    pub fn at_commit_of(&self, what: AtCommit, marker: &str) {
        *self.at_commit.lock().unwrap() = Rule {
            what,
            only: Some(marker.to_string()),
        };
    }

    /// Close every connection now and refuse new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forward nothing more on any connection, old or new, and close none, until
    /// [`Proxy::restore`].
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Hold every byte on every connection, closing none (connections opened meanwhile
    /// are held too), until [`Proxy::resume`].
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Forward what a pause held, and all that follows.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Forward again; connections held by a stall are closed (the database restarted).
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        if self.stalled.send_replace(false) {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

/// Copy one direction of a connection, holding each chunk read while the proxy is paused.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    mut paused: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if paused.wait_for(|p| !*p).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// What happens at a COMMIT, and at which.
struct Rule {
    what: AtCommit,
    only: Option<String>,
}

/// The NUL-terminated strings at the start of a message's body.
fn strings(body: &[u8]) -> Vec<String> {
    body.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The code of PostgreSQL's SSLRequest.
const SSL_REQUEST: u32 = 80_877_103;

/// Forward one connection, reading the client's messages: its startup (a request for TLS
/// refused), then each typed message, a simple-query COMMIT handled as `at_commit` says.
async fn read_commits(
    mut down: TcpStream,
    mut up: TcpStream,
    at_commit: Arc<Mutex<Rule>>,
    everyone: tokio::sync::watch::Sender<u64>,
) {
    let mut head = [0u8; 8];
    if down.read_exact(&mut head).await.is_err() {
        return;
    }
    if u32::from_be_bytes([head[4], head[5], head[6], head[7]]) == SSL_REQUEST
        && (down.write_all(b"N").await.is_err() || down.read_exact(&mut head).await.is_err())
    {
        return;
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut rest = vec![0u8; len.saturating_sub(8)];
    if down.read_exact(&mut rest).await.is_err()
        || up.write_all(&head).await.is_err()
        || up.write_all(&rest).await.is_err()
    {
        return;
    }
    let (mut dr, dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    // The client's side, taken away (closed) to strand the database's.
    let dw = Arc::new(tokio::sync::Mutex::new(Some(dw)));
    let to_client = dw.clone();
    // Set before a COMMIT whose answer is to be lost leaves: what the database says next
    // is withheld, and the connection closed.
    let muted = Arc::new(AtomicBool::new(false));
    let all = Arc::new(AtomicBool::new(false));
    let (m, a) = (muted.clone(), all.clone());
    let answers = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match ur.read(&mut buf).await {
                Ok(n) if n > 0 && !m.load(Ordering::SeqCst) => {
                    let mut client = to_client.lock().await;
                    let Some(w) = client.as_mut() else { continue };
                    if w.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                Ok(n) if n > 0 && a.load(Ordering::SeqCst) => {
                    // Every connection closes, this one with them.
                    everyone.send_modify(|g| *g += 1);
                    return;
                }
                _ => return,
            }
        }
    };
    let asks = async move {
        // The texts of the statements prepared on this connection, by name; whether the
        // open transaction ran one holding the rule's marker.
        let mut prepared: HashMap<String, String> = HashMap::new();
        let mut marked = false;
        loop {
            let mut h = [0u8; 5];
            dr.read_exact(&mut h).await.ok()?;
            let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
            let mut body = vec![0u8; len.saturating_sub(4)];
            dr.read_exact(&mut body).await.ok()?;
            let (what, only) = {
                let rule = at_commit.lock().unwrap();
                (rule.what, rule.only.clone())
            };
            let text = match h[0] {
                b'Q' => strings(&body).into_iter().next(),
                b'P' => strings(&body).get(1).cloned(),
                b'B' => strings(&body).get(1).and_then(|n| prepared.get(n).cloned()),
                _ => None,
            };
            if h[0] == b'P' {
                let s = strings(&body);
                if let (Some(name), Some(q)) = (s.first(), s.get(1)) {
                    prepared.insert(name.clone(), q.clone());
                }
            }
            if let (Some(t), Some(m)) = (&text, &only) {
                marked |= t.contains(m.as_str());
            }
            let commit = h[0] == b'Q' && body == b"COMMIT\0";
            let applies = commit && (only.is_none() || marked);
            if commit || (h[0] == b'Q' && body == b"ROLLBACK\0") {
                marked = false;
            }
            let what = if applies {
                what as u8
            } else {
                AtCommit::Pass as u8
            };
            if commit && what == AtCommit::Drop as u8 {
                return Some(());
            }
            if commit && what == AtCommit::Strand as u8 {
                drop(dw.lock().await.take());
                drop(dr);
                // The database's side held, until the database ends it.
                return std::future::pending::<Option<()>>().await;
            }
            let lose = what == AtCommit::LoseAnswer as u8 || what == AtCommit::LoseAll as u8;
            if commit && lose {
                all.store(what == AtCommit::LoseAll as u8, Ordering::SeqCst);
                muted.store(true, Ordering::SeqCst);
            }
            uw.write_all(&h).await.ok()?;
            uw.write_all(&body).await.ok()?;
            if commit && lose {
                // Held open until the answer comes (and is withheld).
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = answers => {}
        _ = asks => {}
    }
}
