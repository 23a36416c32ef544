#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A real HTTP(S) endpoint for webhook tests: TCP on loopback, optionally TLS with a test CA
//! made at test time, every request kept for reading, answers chosen by the test.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::smtp::{Io, TestTls};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// An answer a handler chose.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, v: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: v.to_string().into_bytes(),
        }
    }
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Chooses the answer to a request (after the script, which wins while it lasts).
pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

#[derive(Default)]
struct State {
    handler: Mutex<Option<Handler>>,
    requests: Mutex<Vec<Request>>,
    /// Statuses for the next requests; `otherwise` once empty.
    script: Mutex<VecDeque<u16>>,
    /// The status once the script is done (200 unless set).
    otherwise: Mutex<Option<u16>>,
    /// A `Retry-After` header on every answer that is not 2xx.
    retry_after: Mutex<Option<String>>,
    /// How long to wait before answering.
    delay: Mutex<Duration>,
    notify: Notify,
}

pub struct HttpReceiver {
    pub port: u16,
    pub tls: bool,
    /// The CA that signed the server's certificate (TLS only).
    pub ca_path: PathBuf,
    state: Arc<State>,
    _dir: tempfile::TempDir,
}

impl HttpReceiver {
    /// A receiver whose answers `handler` chooses (a fake API).
    pub async fn start_with(tls: bool, handler: Handler) -> HttpReceiver {
        let rx = Self::start(tls).await;
        *rx.state.handler.lock().unwrap() = Some(handler);
        rx
    }

    pub async fn start(tls: bool) -> HttpReceiver {
        let (listener, port, keys) = TestTls::listen().await;
        let (acceptor, ca_path, dir) = (keys.acceptor, keys.ca_path, keys.dir);
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let st = Arc::clone(&st);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let io: Box<dyn Io> = if tls {
                        match acceptor.accept(tcp).await {
                            Ok(s) => Box::new(s),
                            Err(_) => return,
                        }
                    } else {
                        Box::new(tcp)
                    };
                    let _ = serve(io, st).await;
                });
            }
        });
        HttpReceiver {
            port,
            tls,
            ca_path,
            state,
            _dir: dir,
        }
    }

    /// `https://127.0.0.1:PORT{path}` (or http).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// Answer the next requests with these statuses (then 200).
    pub fn answer_next(&self, statuses: &[u16]) {
        self.state.script.lock().unwrap().extend(statuses);
    }

    /// Answer every request past the script with this status.
    pub fn answer_always(&self, status: u16) {
        *self.state.otherwise.lock().unwrap() = Some(status);
    }

    /// Send `Retry-After: <value>` with every answer that is not 2xx.
    pub fn set_retry_after(&self, value: Option<&str>) {
        *self.state.retry_after.lock().unwrap() = value.map(str::to_string);
    }

    /// Wait this long before answering.
    pub fn set_delay(&self, d: Duration) {
        *self.state.delay.lock().unwrap() = d;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Forget the requests received so far.
    pub fn clear(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    /// Wait (at most 20 s) until `n` requests arrived; all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Request> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.state.notify.notified();
            {
                let r = self.state.requests.lock().unwrap();
                if r.len() >= n {
                    return r.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let r = self.state.requests.lock().unwrap();
                panic!("waited for {n} webhook requests, got {}", r.len());
            }
        }
    }
}

async fn serve(mut io: Box<dyn Io>, st: Arc<State>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let delay = *st.delay.lock().unwrap();
    let scripted = st
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or(*st.otherwise.lock().unwrap());
    let req = Request {
        method,
        path,
        headers,
        body,
    };
    let handler = st.handler.lock().unwrap().clone();
    let reply = match (scripted, handler) {
        (None, Some(h)) => Some(h(&req)),
        _ => None,
    };
    st.requests.lock().unwrap().push(req);
    st.notify.notify_waiters();
    tokio::time::sleep(delay).await;
    if let Some(reply) = reply {
        let mut head = format!(
            "HTTP/1.1 {} Fake\r\ncontent-length: {}\r\nconnection: close\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        io.write_all(head.as_bytes()).await?;
        io.write_all(&reply.body).await?;
        io.flush().await?;
        let _ = io.shutdown().await;
        return Ok(());
    }
    let status = scripted.unwrap_or(200);
    let mut extra = if (300..400).contains(&status) {
        "location: http://127.0.0.1:9/elsewhere\r\n".to_string()
    } else {
        String::new()
    };
    if let (false, Some(v)) = (
        (200..300).contains(&status),
        st.retry_after.lock().unwrap().clone(),
    ) {
        extra.push_str(&format!("retry-after: {v}\r\n"));
    }
    let resp = format!(
        "HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\n{extra}connection: close\r\n\r\n"
    );
    io.write_all(resp.as_bytes()).await?;
    io.flush().await?;
    let _ = io.shutdown().await;
    Ok(())
}
