//! The server under test: started as a process on a fresh database, measured from /proc.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use otpmint::testkit::smtp::SmtpServer;

use super::*;

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(10));
    }
}

/// SIGTERM, then wait for the process to end within `grace` (then SIGKILL); whether it
/// ended by itself in time. Blocks the calling thread.
pub fn stop(child: &mut Child, grace: Duration) -> bool {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Whether the server on `port` answers `/healthz` with 200 within `within`.
pub async fn healthy_within(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut c) = Conn::open(port).await {
            if let Ok((200, _)) = c.request("GET", "/healthz", "", b"").await {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The name of this run's database on the PostgreSQL server of `--database`.
fn database_name() -> String {
    format!("otpmint_bench_{}", std::process::id())
}

/// The URL of this run's database on the PostgreSQL server `base`.
pub fn database_url(base: &str) -> String {
    let name = database_name();
    let (head, query) = base.split_once('?').unwrap_or((base, ""));
    let auth = head.find("://").map_or(0, |i| i + 3);
    let head = head[auth..].find('/').map_or(head, |i| &head[..auth + i]);
    if query.is_empty() {
        format!("{head}/{name}")
    } else {
        format!("{head}/{name}?{query}")
    }
}

/// A fresh database on the PostgreSQL server of `--database`; its URL.
pub fn fresh_database(base: &str) -> String {
    let (b, n) = (base.to_string(), database_name());
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
    database_url(base)
}

/// `--instances` servers on one database (SQLite: one server, its own file).
/// `extra`: lines for `[webhooks]` and tables for the end of each server's configuration.
pub async fn start_servers(
    bin: &Path,
    smtp: &SmtpServer,
    args: &Args,
    extra: &(String, String),
) -> Vec<Server> {
    let shared = args.database.as_deref().map(|base| {
        format!(
            "[database]\nurl = \"{}\"\npool_size = 16\n[crypto]\nmaster_key = \"{}\"\n",
            fresh_database(base),
            otpmint::crypto::keyring::MasterKey::generate().to_base64()
        )
    });
    let mut servers = Vec::new();
    for _ in 0..args.instances.max(1) {
        let tail = format!("{}{}", shared.as_deref().unwrap_or(""), extra.1);
        servers.push(start_server(bin, smtp, args, (&extra.0, &tail)).await);
    }
    servers
}

pub async fn start_server(
    bin: &Path,
    smtp: &SmtpServer,
    args: &Args,
    (webhooks, database): (&str, &str),
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut hashing = String::new();
    if let Some(m) = args.memory_kib {
        hashing.push_str(&format!("memory_kib = {m}\n"));
    }
    if let Some(i) = args.iterations {
        hashing.push_str(&format!("iterations = {i}\n"));
    }
    if let Some(a) = &args.hashing_algorithm {
        hashing.push_str(&format!("algorithm = {a:?}\n"));
    }
    let pool = args
        .smtp_pool_size
        .map(|n| format!("pool_size = {n}\n"))
        .unwrap_or_default();
    let conf = format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\n[admin]\ntoken = \"{ADMIN}\"\n[registration]\nmode = \"admin\"\n\
         [hashing]\n{hashing}\n\
         [limits]\nper_ip_per_second = 1000000\nper_ip_burst = 1000000\nrecipient_max_sends = 1000\ntenant_max_sends_per_hour = 100000000\nrecipient_max_failures = 100000\nsms_range_per_hour = 1000000\nsms_unverified_per_country_per_hour = 1000000\n\
         [compat]\nmax_attempts = 20\n[webhooks]\nallow_private_hosts = true\nallow_plaintext = true\n{webhooks}\
         [smtp]\nallow_private_hosts = true\n{pool}allowed_ports = [{}]\nextra_root_certificates = [\"{}\"]\n{database}",
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
    assert!(
        healthy_within(port, Duration::from_secs(30)).await,
        "the server did not come up; see its log in {}",
        server.dir.path().display()
    );
    server
}

/// User+system CPU in ms of a process or thread from its `stat` file (0 if gone).
fn stat_cpu_ms(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // fields after ')' start at field 3 (state); utime = 14, stime = 15 → indexes 11, 12
    (ticks(11) + ticks(12)) * 1000 / 100
}

/// CPU in ms of a process (all its threads, ended ones included).
pub fn process_cpu_ms(pid: u32) -> u64 {
    stat_cpu_ms(&format!("/proc/{pid}/stat"))
}

/// CPU in ms of a server's hashing threads (`otpmint-hash-N`, which live as long as it).
pub fn hashing_cpu_ms(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("otpmint-hash"))
        })
        .map(|t| stat_cpu_ms(&t.path().join("stat").to_string_lossy()))
        .sum()
}

/// A size field of a process's `/proc/PID/status` in KiB (`VmHWM:`, `VmRSS:`; 0 if gone).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// (user+system CPU in ms, peak RSS in KiB) of a process, from /proc.
pub fn proc_stats(pid: u32) -> (u64, u64) {
    (process_cpu_ms(pid), status_kib(pid, "VmHWM:"))
}

/// `--prefill-*`: stored codes and tenants, before the load.
pub fn prefill_if_asked(args: &Args, servers: &[Server]) {
    if args.prefill_codes == 0 && args.prefill_tenants == 0 {
        return;
    }
    assert!(
        args.database.is_none(),
        "--prefill-* writes the SQLite file; not with --database"
    );
    eprintln!(
        "pre-filling {} codes over {} tenants…",
        args.prefill_codes, args.prefill_tenants
    );
    let t = Instant::now();
    prefill(
        &servers[0].dir.path().join("data/otpmint.db"),
        args.prefill_codes,
        args.prefill_tenants,
    );
    eprintln!("pre-filled in {:.1} s", t.elapsed().as_secs_f64());
}

/// Insert stored codes and tenants directly, so the run shows whether cost grows with data.
pub fn prefill(db: &Path, codes: u64, tenants: u64) {
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
