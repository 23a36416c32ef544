//! A minimal keep-alive HTTP/1.1 client and the closed-loop load driver.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct Conn {
    r: BufReader<TcpStream>,
    buf: Vec<u8>,
    port: u16,
    /// The last answer said `Connection: close` (OtpMint's Werkzeug server says so, then
    /// keeps the socket open): the next request goes on a new connection.
    closed: bool,
}

impl Conn {
    pub async fn open(port: u16) -> std::io::Result<Conn> {
        Ok(Conn {
            r: BufReader::new(Self::connect(port).await?),
            buf: Vec::with_capacity(1024),
            port,
            closed: false,
        })
    }

    async fn connect(port: u16) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        auth: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let bearer = (!auth.is_empty()).then(|| format!("Bearer {auth}"));
        let header = bearer.as_deref().map(|b| [("Authorization", b)]);
        write_request(
            &mut buf,
            method,
            path,
            header.as_ref().map_or(&[], |h| h),
            body,
        )?;
        let answer = self.exchange(&buf).await;
        self.buf = buf;
        answer
    }

    /// Send one request as written by [`write_request`] and read its answer.
    pub async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        if self.closed {
            self.r = BufReader::new(Self::connect(self.port).await?);
            self.closed = false;
        }
        self.r.get_mut().write_all(request).await?;
        let mut line = String::new();
        self.r.read_line(&mut line).await?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut len = 0usize;
        loop {
            line.clear();
            if self.r.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::other("eof"));
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close") {
                    self.closed = true;
                }
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

/// An HTTP/1.1 request with a JSON body, as [`Conn::exchange`] sends it.
pub fn write_request(
    buf: &mut Vec<u8>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    write!(
        buf,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    )?;
    for (k, v) in headers {
        write!(buf, "{k}: {v}\r\n")?;
    }
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(body);
    Ok(())
}

#[derive(Clone)]
pub struct Req {
    pub method: &'static str,
    pub path: &'static str,
    pub auth: String,
    pub body: Vec<u8>,
}

pub type Gen = Arc<dyn Fn(u64) -> Option<Req> + Send + Sync>;

pub async fn drive(
    ports: &[u16],
    conc: usize,
    duration: Duration,
    max: u64,
    gen: Gen,
) -> (Vec<u32>, BTreeMap<u16, u64>, u64, f64) {
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for t in 0..conc {
        let port = ports[t % ports.len()];
        let (next, stop, gen) = (next.clone(), stop.clone(), gen.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut errors = 0u64;
            let mut conn = match Conn::open(port).await {
                Ok(c) => c,
                Err(_) => return (lat, statuses, 1),
            };
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max {
                    break;
                }
                let Some(req) = gen(i) else {
                    stop.store(true, Ordering::Relaxed);
                    break;
                };
                let t = Instant::now();
                match conn
                    .request(req.method, req.path, &req.auth, &req.body)
                    .await
                {
                    Ok((s, _)) => {
                        lat.push(t.elapsed().as_micros() as u32);
                        *statuses.entry(s).or_default() += 1;
                    }
                    Err(_) => {
                        errors += 1;
                        match Conn::open(port).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (lat, statuses, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut errors = 0;
    for t in tasks {
        let (l, s, e) = t.await.unwrap();
        lat.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
        errors += e;
    }
    (lat, statuses, errors, start.elapsed().as_secs_f64())
}

pub fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}
