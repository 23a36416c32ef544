//! otpmint-bench: a reproducible load benchmark. Starts a release otpmint on loopback with a
//! fresh database and capacity-run limits, a real SMTP server (STARTTLS + AUTH, test CA),
//! then drives keep-alive HTTP load per scenario and concurrency, and reports throughput,
//! latency, errors, server CPU per request, peak RSS, SMTP connections, and throughput as a
//! ratio of the argon2id hashing floor measured with the server's own hashing code.
//! Every loop is bounded by time and count. See docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use otpmint::config::HashingSettings;
use otpmint::crypto::hashing::Hasher;
use otpmint::testkit::smtp::{SmtpServer, SMTP_PASS, SMTP_USER};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ADMIN: &str = "bench-admin-token-0123456789";
const COMPAT_KEY: &str = "bench-compat-secret-key-0001";

#[derive(Parser, Debug)]
#[command(about = "Load benchmark for otpmint (see docs/benchmarks.md)")]
struct Args {
    /// Seconds per scenario and concurrency
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Concurrency levels
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    /// Scenarios to run
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mint,mint-async,verify-wrong,verify-right,compat-mint,compat-verify-wrong,compat-verify-right"
    )]
    scenarios: Vec<String>,
    /// argon2id memory (KiB); default: the server's default
    #[arg(long)]
    memory_kib: Option<u32>,
    /// argon2id iterations; default: the server's default
    #[arg(long)]
    iterations: Option<u32>,
    /// Rows to pre-fill before the run: stored codes (spread over --prefill-tenants tenants)
    #[arg(long, default_value_t = 0)]
    prefill_codes: u64,
    #[arg(long, default_value_t = 0)]
    prefill_tenants: u64,
    /// A few seconds, tiny concurrency: proves the tool works (CI)
    #[arg(long)]
    smoke: bool,
    /// Per-message acceptance delays of the relay (ms) to run every scenario against; a real
    /// relay takes 50-500 ms
    #[arg(long, value_delimiter = ',', default_value = "0")]
    relay_delay_ms: Vec<u64>,
    /// The tenants' smtp.max_connections (sessions open to the relay at once)
    #[arg(long, default_value_t = 64)]
    max_connections: u32,
    /// Seconds of hashing-floor sampling before and after each run (the machine's speed
    /// drifts: a ratio needs the floor of its own minute)
    #[arg(long, default_value_t = 1.0)]
    floor_seconds: f64,
    /// A PostgreSQL server (postgres://…, a role that may create databases): the servers
    /// under test store in a fresh database on it instead of SQLite
    #[arg(long)]
    database: Option<String>,
    /// Server processes on the one database (needs --database); the load is spread over
    /// them round-robin, as a load balancer would
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Where to write the JSON results
    #[arg(long, default_value = "target/bench-results.json")]
    json: PathBuf,
    /// The otpmint binary (default: next to this one)
    #[arg(long)]
    server: Option<PathBuf>,
}

// ---------- a minimal keep-alive HTTP/1.1 client (no extra work on the client side) ----------

struct Conn {
    r: BufReader<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            r: BufReader::new(s),
            buf: Vec::with_capacity(1024),
        })
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        auth: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        self.buf.clear();
        write!(
            self.buf,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )?;
        if !auth.is_empty() {
            write!(self.buf, "Authorization: Bearer {auth}\r\n")?;
        }
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(body);
        self.r.get_mut().write_all(&self.buf).await?;
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
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

// ---------- the server under test ----------

struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh database on the PostgreSQL server of `--database`; its URL.
fn fresh_database(base: &str) -> String {
    let name = format!("otpmint_bench_{}", std::process::id());
    let (b, n) = (base.to_string(), name.clone());
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&b, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot reach --database: {e}"));
        c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{n}\" WITH (FORCE)"))
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE \"{n}\""))
            .unwrap();
    })
    .join()
    .unwrap();
    let (head, query) = base.split_once('?').unwrap_or((base, ""));
    let auth = head.find("://").map_or(0, |i| i + 3);
    let head = head[auth..].find('/').map_or(head, |i| &head[..auth + i]);
    if query.is_empty() {
        format!("{head}/{name}")
    } else {
        format!("{head}/{name}?{query}")
    }
}

/// `--instances` servers on one database (SQLite: one server, its own file).
async fn start_servers(bin: &Path, smtp: &SmtpServer, args: &Args) -> Vec<Server> {
    let shared = args.database.as_deref().map(|base| {
        format!(
            "[database]\nurl = \"{}\"\npool_size = 16\n[crypto]\nmaster_key = \"{}\"\n",
            fresh_database(base),
            otpmint::crypto::keyring::MasterKey::generate().to_base64()
        )
    });
    let mut servers = Vec::new();
    for _ in 0..args.instances.max(1) {
        servers.push(start_server(bin, smtp, args, shared.as_deref().unwrap_or("")).await);
    }
    servers
}

async fn start_server(bin: &Path, smtp: &SmtpServer, args: &Args, database: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut hashing = String::new();
    if let Some(m) = args.memory_kib {
        hashing.push_str(&format!("memory_kib = {m}\n"));
    }
    if let Some(i) = args.iterations {
        hashing.push_str(&format!("iterations = {i}\n"));
    }
    let conf = format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\n[admin]\ntoken = \"{ADMIN}\"\n[registration]\nmode = \"admin\"\n\
         [hashing]\n{hashing}\n\
         [limits]\nper_ip_per_second = 1000000\nper_ip_burst = 1000000\nrecipient_max_sends = 1000\ntenant_max_sends_per_hour = 100000000\nrecipient_max_failures = 100000\n\
         [compat]\nmax_attempts = 20\n\
         [smtp]\nallow_private_hosts = true\npool_size = 64\nallowed_ports = [{}]\nextra_root_certificates = [\"{}\"]\n{database}",
        smtp.port,
        smtp.ca_path.display()
    );
    std::fs::write(dir.path().join("bench.toml"), conf).unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new(bin)
        .current_dir(dir.path())
        .arg("--config")
        .arg("bench.toml")
        .env_remove("OTPMINT_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let server = Server { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Conn::open(port).await {
            if let Ok((200, _)) = c.request("GET", "/healthz", "", b"").await {
                return server;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server did not come up; see its log in {}",
            server.dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (user+system CPU in ms, peak RSS in KiB) of a process, from /proc.
fn proc_stats(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // fields after ')' start at field 3 (state); utime = 14, stime = 15 → indexes 11, 12
    let cpu_ms = (ticks(11) + ticks(12)) * 1000 / 100;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu_ms, hwm)
}

// ---------- load ----------

#[derive(Clone)]
struct Req {
    method: &'static str,
    path: &'static str,
    auth: String,
    body: Vec<u8>,
}

type Gen = Arc<dyn Fn(u64) -> Option<Req> + Send + Sync>;

#[derive(Serialize, Clone, Default)]
struct RunResult {
    scenario: String,
    concurrency: usize,
    requests: u64,
    seconds: f64,
    rps: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    server_cpu_ms_per_request: f64,
    server_peak_rss_mib: f64,
    smtp_connections_opened: usize,
    /// The relay's per-message acceptance delay in this run.
    relay_delay_ms: u64,
    /// Hashing floor sampled just before and just after this run (hashes/s).
    floor_before: f64,
    floor_after: f64,
    /// Throughput over the mean of the two floors.
    ratio_of_hashing_floor: f64,
    /// mint-async: seconds from the end of the load until the relay had every queued message.
    drain_seconds: Option<f64>,
}

async fn drive(
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

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Measure the hashing floor: argon2id hashes per second on all cores, through otpmint's
/// own hashing pool with the server's parameters.
async fn hashing_floor(args: &Args, seconds: f64) -> f64 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let settings = HashingSettings {
        memory_kib: args.memory_kib.unwrap_or(4096),
        iterations: args.iterations.unwrap_or(1),
        parallelism: 1,
        max_concurrent: cores,
        max_queue: cores * 8,
    };
    let hasher = Hasher::new(&settings, cores, &[7u8; 32]).unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..cores * 4 {
        let (h, d) = (hasher.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if h.hash("123456").await.is_ok() {
                    d.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Mint `n` codes (native or compat) and return (key, code) pairs read from the received mail.
async fn premint(
    port: u16,
    smtp: &SmtpServer,
    sk: &str,
    compat: bool,
    n: u64,
    tag: &str,
) -> Vec<(String, String)> {
    smtp.drain();
    let keys = Arc::new(Mutex::new(Vec::new()));
    let sk = sk.to_string();
    let tag = tag.to_string();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (keys, sk, tag, next) = (keys.clone(), sk.clone(), tag.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(port).await.unwrap();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let email = format!("pre-{tag}-{i}@bench.example");
                let (status, body) = if compat {
                    c.request(
                        "POST",
                        "/otp",
                        "",
                        json!({"mail": email, "secretKey": sk})
                            .to_string()
                            .as_bytes(),
                    )
                    .await
                    .unwrap()
                } else {
                    c.request(
                        "POST",
                        "/v1/otp",
                        &sk,
                        json!({"email": email}).to_string().as_bytes(),
                    )
                    .await
                    .unwrap()
                };
                if status == 200 || status == 201 {
                    let key = if compat {
                        String::from_utf8_lossy(&body).to_string()
                    } else {
                        serde_json::from_slice::<Value>(&body).unwrap()["shareable_key"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    };
                    keys.lock().unwrap().push((email, key));
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let codes: HashMap<String, String> = smtp
        .drain()
        .into_iter()
        .map(|m| (m.to.first().cloned().unwrap_or_default(), m.code()))
        .collect();
    let keys = std::mem::take(&mut *keys.lock().unwrap());
    keys.into_iter()
        .filter_map(|(e, k)| codes.get(&e).map(|c| (k, c.clone())))
        .collect()
}

fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| char::from(b'0' + ((c as u8 - b'0' + 1) % 10)))
        .collect()
}

/// Insert stored codes and tenants directly, so the run shows whether cost grows with data.
fn prefill(db: &Path, codes: u64, tenants: u64) {
    use rand::RngCore;
    let mut c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    let tx = c.transaction().unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let mut rng = rand::rngs::OsRng;
    let mut ids = Vec::new();
    {
        let mut t = tx.prepare("INSERT INTO tenants (id, name, enabled, origin, created_at, updated_at, smtp_host, smtp_port, smtp_username, smtp_password, smtp_from, smtp_tls, smtp_version, code_length, ttl_seconds, max_attempts) VALUES (?1, 'prefill', 1, 'native', ?2, ?2, 'smtp.example.com', 587, 'u', X'00', 'a@b.example', 'starttls', 1, 6, 600, 5)").unwrap();
        let mut s = tx
            .prepare(
                "INSERT INTO tenant_secrets (digest, tenant_id, created_at) VALUES (?1, ?2, ?3)",
            )
            .unwrap();
        for i in 0..tenants.max(1) {
            let id = format!("tnt_prefill{i:09}");
            t.execute(rusqlite::params![id, now]).unwrap();
            let mut d = [0u8; 32];
            rng.fill_bytes(&mut d);
            s.execute(rusqlite::params![d.to_vec(), id, now]).unwrap();
            ids.push(id);
        }
        let mut ch = tx.prepare("INSERT INTO challenges (key_digest, tenant_id, flavor, email, email_canonical, purpose, seq, code_hash, status, attempts, max_attempts, code_length, created_at, expires_at) VALUES (?1, ?2, 'native', ?3, ?3, 'default', 1, '$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', ?4, 0, 5, 6, ?5, ?6)").unwrap();
        for i in 0..codes {
            let mut d = [0u8; 32];
            rng.fill_bytes(&mut d);
            let status = if i % 3 == 0 { "pending" } else { "verified" };
            ch.execute(rusqlite::params![
                d.to_vec(),
                ids[(i as usize) % ids.len()],
                format!("p{i}@prefill.example"),
                status,
                now,
                now + 86_400_000
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.smoke {
        args.duration = 1;
        args.concurrency = vec![1, 2];
        args.floor_seconds = 0.25;
    }
    let bin = args
        .server
        .clone()
        .unwrap_or_else(|| std::env::current_exe().unwrap().with_file_name("otpmint"));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    eprintln!(
        "measuring the hashing floor ({} KiB, {} iteration(s), {cores} cores)…",
        args.memory_kib.unwrap_or(4096),
        args.iterations.unwrap_or(1)
    );
    let floor = hashing_floor(&args, if args.smoke { 1.0 } else { 3.0 }).await;
    eprintln!("hashing floor: {floor:.0} hashes/s");

    let smtp = SmtpServer::start().await;
    assert!(
        args.instances <= 1 || args.database.is_some(),
        "--instances needs --database (instances share one PostgreSQL database)"
    );
    let servers = start_servers(&bin, &smtp, &args).await;
    let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let server = &servers[0];
    let port = server.port;
    eprintln!(
        "storage: {}, {} instance(s)",
        if args.database.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        ports.len()
    );
    let mut c = Conn::open(port).await.unwrap();
    let (s, body) = c
        .request("POST", "/v1/tenants", ADMIN, json!({"name": "bench", "smtp": {"host": "127.0.0.1", "port": smtp.port, "username": SMTP_USER, "password": SMTP_PASS, "from": "Bench <bench@bench.example>", "max_connections": args.max_connections}}).to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&body));
    let sk = serde_json::from_slice::<Value>(&body).unwrap()["secret_key"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = c
        .request("POST", "/reg_secretkey", ADMIN, json!({"secretKey": COMPAT_KEY, "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_mail": SMTP_USER, "smtp_password": SMTP_PASS}).to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(s, 200);
    if (args.prefill_codes > 0 || args.prefill_tenants > 0) && args.database.is_some() {
        panic!("--prefill-* writes the SQLite file; not with --database");
    }
    if args.prefill_codes > 0 || args.prefill_tenants > 0 {
        eprintln!(
            "pre-filling {} codes over {} tenants…",
            args.prefill_codes, args.prefill_tenants
        );
        let t = Instant::now();
        prefill(
            &server.dir.path().join("data/otpmint.db"),
            args.prefill_codes,
            args.prefill_tenants,
        );
        eprintln!("pre-filled in {:.1} s", t.elapsed().as_secs_f64());
    }

    let duration = Duration::from_secs(args.duration);
    let mut results = Vec::new();
    let run_id = AtomicUsize::new(0);
    let mut runs = Vec::new();
    for &delay in &args.relay_delay_ms {
        for scenario in &args.scenarios {
            // Verifying never touches the relay: run it once, with the instant relay.
            if delay > 0 && !scenario.ends_with("mint") && !scenario.ends_with("mint-async") {
                continue;
            }
            for &conc in &args.concurrency {
                runs.push((delay, scenario.clone(), conc));
            }
        }
    }
    for (delay, scenario, conc) in runs {
        let scenario = &scenario;
        smtp.set_delay(Duration::from_millis(delay));
        {
            let run = run_id.fetch_add(1, Ordering::Relaxed);
            let compat = scenario.starts_with("compat-");
            let kind = scenario.trim_start_matches("compat-");
            let async_mint = kind == "mint-async";
            let kind = if async_mint { "mint" } else { kind };
            // Enough codes for the run, bounded: verify cannot beat the hashing floor.
            let expected = (floor * args.duration as f64 * 1.3) as u64 + 50;
            let gen: Gen = match kind {
                "mint" => {
                    let sk = if compat {
                        COMPAT_KEY.to_string()
                    } else {
                        sk.clone()
                    };
                    Arc::new(move |i| {
                        let email = format!("m{run}-{i}@bench.example");
                        Some(if compat {
                            Req {
                                method: "POST",
                                path: "/otp",
                                auth: String::new(),
                                body: json!({"mail": email, "secretKey": sk})
                                    .to_string()
                                    .into_bytes(),
                            }
                        } else {
                            Req {
                                method: "POST",
                                path: "/v1/otp",
                                auth: sk.clone(),
                                body: if async_mint {
                                    json!({"email": email, "delivery": "async"})
                                } else {
                                    json!({"email": email})
                                }
                                .to_string()
                                .into_bytes(),
                            }
                        })
                    })
                }
                "verify-wrong" | "verify-right" => {
                    let right = kind == "verify-right";
                    let n = if right {
                        expected.min(30_000)
                    } else {
                        // Each code takes max_attempts (5) wrong guesses before it is spent.
                        (expected / 4).clamp(20, 20_000)
                    };
                    eprintln!("{scenario} c={conc}: pre-minting {n} codes…");
                    let pool = Arc::new(
                        premint(
                            port,
                            &smtp,
                            if compat { COMPAT_KEY } else { &sk },
                            compat,
                            n,
                            &format!("{run}"),
                        )
                        .await,
                    );
                    let sk = sk.clone();
                    Arc::new(move |i| {
                        if pool.is_empty() || (right && i as usize >= pool.len()) {
                            return None;
                        }
                        let (key, code) = &pool[i as usize % pool.len()];
                        let otp = if right { code.clone() } else { wrong(code) };
                        Some(if compat {
                            Req {
                                method: "POST",
                                path: "/verify-otp",
                                auth: String::new(),
                                body: json!({"shareableKey": key, "otp": otp})
                                    .to_string()
                                    .into_bytes(),
                            }
                        } else {
                            Req {
                                method: "POST",
                                path: "/v1/otp/verify",
                                auth: sk.clone(),
                                body: json!({"shareable_key": key, "otp": otp})
                                    .to_string()
                                    .into_bytes(),
                            }
                        })
                    })
                }
                other => panic!("unknown scenario {other}"),
            };
            smtp.drain();
            let floor_before = hashing_floor(&args, args.floor_seconds).await;
            let conns_before = smtp.connections();
            let stats = || {
                pids.iter()
                    .map(|p| proc_stats(*p))
                    .fold((0, 0), |(c, h), (pc, ph)| (c + pc, h.max(ph)))
            };
            let (cpu_before, _) = stats();
            let (mut lat, statuses, errors, secs) =
                drive(&ports, conc, duration, 5_000_000, gen).await;
            let (cpu_after, hwm) = stats();
            let drain_seconds = if async_mint {
                let queued = statuses.get(&202).copied().unwrap_or(0) as usize;
                let t = Instant::now();
                while smtp.messages().len() < queued && t.elapsed() < Duration::from_secs(120) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let got = smtp.messages().len();
                if got < queued {
                    eprintln!(
                        "mint-async: only {got} of {queued} queued messages arrived within 120 s"
                    );
                }
                Some(t.elapsed().as_secs_f64())
            } else {
                None
            };
            smtp.drain();
            let floor_after = hashing_floor(&args, args.floor_seconds).await;
            let floor = (floor_before + floor_after) / 2.0;
            lat.sort_unstable();
            let n = lat.len() as u64;
            let r = RunResult {
                scenario: scenario.clone(),
                concurrency: conc,
                requests: n,
                seconds: secs,
                rps: n as f64 / secs,
                p50_ms: pct(&lat, 0.50),
                p95_ms: pct(&lat, 0.95),
                p99_ms: pct(&lat, 0.99),
                statuses,
                transport_errors: errors,
                server_cpu_ms_per_request: if n > 0 {
                    (cpu_after - cpu_before) as f64 / n as f64
                } else {
                    0.0
                },
                server_peak_rss_mib: hwm as f64 / 1024.0,
                smtp_connections_opened: smtp.connections() - conns_before,
                relay_delay_ms: delay,
                floor_before,
                floor_after,
                drain_seconds,
                ratio_of_hashing_floor: if floor > 0.0 {
                    n as f64 / secs / floor
                } else {
                    0.0
                },
            };
            eprintln!(
                "{:<22} relay {:>3} ms c={:<3} {:>8.1} req/s  p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  cpu {:>5.2} ms/req  rss {:>6.1} MiB  smtp conns {:>3}  floor {:.0}..{:.0} x{:.2}  drain {:?}  {:?}",
                r.scenario, r.relay_delay_ms, r.concurrency, r.rps, r.p50_ms, r.p95_ms, r.p99_ms, r.server_cpu_ms_per_request, r.server_peak_rss_mib, r.smtp_connections_opened, r.floor_before, r.floor_after, r.ratio_of_hashing_floor, r.drain_seconds, r.statuses
            );
            results.push(r);
        }
    }
    drop(c);
    let report = json!({
        "machine": {"cores": cores, "os": std::env::consts::OS},
        "config": {"memory_kib": args.memory_kib.unwrap_or(4096), "iterations": args.iterations.unwrap_or(1), "duration_s": args.duration,
                   "prefill_codes": args.prefill_codes, "prefill_tenants": args.prefill_tenants},
        "hashing_floor_per_s": floor,
        "storage": if args.database.is_some() { "postgres" } else { "sqlite" },
        "instances": args.instances.max(1),
        "results": results,
    });
    if let Some(parent) = args.json.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("{}", table(&report));
    eprintln!("results written to {}", args.json.display());
    drop(servers);
}

fn table(report: &Value) -> String {
    let mut out = format!(
        "hashing floor at start: {:.0} hashes/s (each run's own floor is sampled before and after it)\n| scenario | relay ms | conc | req/s | p50 ms | p95 ms | p99 ms | statuses | cpu ms/req | peak RSS MiB | SMTP conns | floor before..after | × floor | drain s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        report["hashing_floor_per_s"].as_f64().unwrap_or(0.0)
    );
    for r in report["results"].as_array().unwrap() {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.1} | {} | {:.0}..{:.0} | {:.2} | {} |\n",
            r["scenario"].as_str().unwrap(),
            r["relay_delay_ms"],
            r["concurrency"],
            r["rps"].as_f64().unwrap(),
            r["p50_ms"].as_f64().unwrap(),
            r["p95_ms"].as_f64().unwrap(),
            r["p99_ms"].as_f64().unwrap(),
            r["statuses"].to_string().replace('"', ""),
            r["server_cpu_ms_per_request"].as_f64().unwrap(),
            r["server_peak_rss_mib"].as_f64().unwrap(),
            r["smtp_connections_opened"],
            r["floor_before"].as_f64().unwrap(),
            r["floor_after"].as_f64().unwrap(),
            r["ratio_of_hashing_floor"].as_f64().unwrap(),
            r["drain_seconds"]
                .as_f64()
                .map(|d| format!("{d:.1}"))
                .unwrap_or_else(|| "".into()),
        ));
    }
    out
}
