//! spawn_app(): the real server on 127.0.0.1:0 with a temp database, a manual clock and a
//! real SMTP server on loopback; plus small request helpers.

use std::path::PathBuf;
use std::sync::Arc;

use otpmint::clock::ManualClock;
use otpmint::config::Settings;
use otpmint::startup::Application;
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::smtp::{SmtpServer, SMTP_PASS, SMTP_USER};

/// `OTPMINT_TEST_LOG=<filter>` (`debug`, `otpmint=trace`, …): the servers' logs go to the
/// test's output, which `cargo test` shows for a failing test (README.md, "Two commands").
fn logs_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("OTPMINT_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// An answer's status and its JSON body (`null` when it has none).
pub async fn body(r: Response) -> (StatusCode, Value) {
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub const ADMIN: &str = "test-admin-token-0123456789";

pub struct TestApp {
    pub addr: String,
    pub smtp: SmtpServer,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    pub handle: actix_web::dev::ServerHandle,
    pub services: otpmint::service::Services,
}

pub fn test_settings(dir: &std::path::Path, smtp: &SmtpServer) -> Settings {
    let mut s = Settings::load_from(None, Vec::<(String, String)>::new()).unwrap();
    s.server.bind = "127.0.0.1:0".into();
    s.server.workers = 2;
    s.database.url = match postgres_base_url() {
        Some(base) => fresh_pg_database(&base),
        None => format!("sqlite://{}", dir.join("otpmint.db").display()),
    };
    s.crypto.master_key_file = dir.join("master.key").display().to_string();
    s.admin.token = SecretString::from(ADMIN.to_string());
    s.smtp.allow_private_hosts = true;
    s.smtp.allowed_ports = vec![smtp.port];
    s.smtp.extra_root_certificates = vec![smtp.ca_path.clone()];
    s.smtp.timeout_seconds = 5;
    s.hashing.max_concurrent = 2;
    // Limits off unless a test turns them on.
    s.limits.resend_cooldown_seconds = 0;
    s.limits.recipient_max_sends = 0;
    s.limits.tenant_max_sends_per_hour = 0;
    s.limits.recipient_max_failures = 0;
    s
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &smtp);
    tweak(&mut settings);
    start(settings, smtp, dir, Arc::new(ManualClock::starting_now())).await
}

pub async fn start(
    settings: Settings,
    smtp: SmtpServer,
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
) -> TestApp {
    logs_if_asked();
    let app = Application::build_with_clock(settings.clone(), clock.clone()).expect("app builds");
    let port = app.port();
    let handle = app.handle();
    let services = app.services().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        addr: format!("http://127.0.0.1:{port}"),
        smtp,
        clock,
        // Idle connections are given up before the server's 5 s keep-alive closes them: a
        // request on a connection the server is closing at that instant fails as an
        // incomplete message (seen once under a loaded machine).
        client: reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(3))
            .build()
            .expect("the test client"),
        dir,
        settings,
        handle,
        services,
    }
}

impl TestApp {
    /// A config file for the CLI that points at this app's database and key.
    pub fn cli_config(&self) -> PathBuf {
        let p = self.dir.path().join("cli.toml");
        std::fs::write(
            &p,
            format!(
                "[database]\nurl = \"{}\"\n[crypto]\nmaster_key_file = \"{}\"\n[smtp]\nallow_private_hosts = true\nallowed_ports = [{}]\nextra_root_certificates = [\"{}\"]\n[dns]\nresolver = \"{}\"\n",
                self.settings.database.url,
                self.settings.crypto.master_key_file,
                self.smtp.port,
                self.smtp.ca_path.display(),
                self.settings.dns.resolver
            ),
        )
        .unwrap();
        p
    }

    /// Run the CLI with this app's config: (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        otpmint_with(&self.cli_config(), args)
    }

    /// The name of this app's PostgreSQL database (the last part of its URL).
    pub fn database_name(&self) -> String {
        let url = &self.settings.database.url;
        url.rsplit('/').next().unwrap_or(url).to_string()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("otpmint.db")
    }

    /// Everything the database holds at rest: SQLite's file and WAL, or on PostgreSQL every
    /// table's rows as text with each bytea value decoded to its bytes.
    pub fn stored_bytes(&self) -> Vec<u8> {
        if !on_postgres() {
            let mut bytes = std::fs::read(self.db_path()).unwrap();
            bytes.extend(std::fs::read(self.dir.path().join("otpmint.db-wal")).unwrap_or_default());
            return bytes;
        }
        let url = self.settings.database.url.clone();
        let text = pg_blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let tables = c
                .query(
                    "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
                    &[],
                )
                .unwrap();
            let mut text = String::new();
            for t in tables {
                let name: String = t.get(0);
                for r in c
                    .query(&format!("SELECT t::text FROM \"{name}\" t"), &[])
                    .unwrap()
                {
                    text.push_str(&r.get::<_, String>(0));
                    text.push('\n');
                }
            }
            text
        });
        let mut bytes = text.clone().into_bytes();
        // bytea prints as \x followed by hex digits
        for part in text.split("\\x").skip(1) {
            let hex: String = part.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            for i in (0..hex.len() / 2).map(|i| i * 2) {
                bytes.push(u8::from_str_radix(&hex[i..i + 2], 16).unwrap());
            }
            bytes.push(b'\n');
        }
        bytes
    }

    /// Stop this server and start another on the same database, key and SMTP server.
    pub async fn restart(self) -> TestApp {
        self.handle.stop(true).await;
        let TestApp {
            smtp,
            dir,
            settings,
            clock,
            ..
        } = self;
        start(settings, smtp, dir, clock).await
    }

    pub fn smtp_json(&self) -> Value {
        json!({
            "host": "127.0.0.1",
            "port": self.smtp.port,
            "username": SMTP_USER,
            "password": SMTP_PASS,
            "from": "Acme <no-reply@acme.example>",
            "tls": "starttls",
        })
    }

    pub async fn post(&self, path: &str, bearer: &str, body: Value) -> Response {
        self.client
            .post(format!("{}{}", self.addr, path))
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn patch(&self, path: &str, bearer: &str, body: Value) -> Response {
        self.client
            .patch(format!("{}{}", self.addr, path))
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn put(&self, path: &str, bearer: &str, body: Value) -> Response {
        self.client
            .put(format!("{}{}", self.addr, path))
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, bearer: &str) -> Response {
        self.client
            .get(format!("{}{}", self.addr, path))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str, bearer: &str) -> Response {
        self.client
            .delete(format!("{}{}", self.addr, path))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
    }

    /// Create a tenant with this SMTP server; returns (id, secret key).
    pub async fn tenant_with(&self, policy: Value) -> (String, String) {
        let mut body = json!({"name": "Acme", "smtp": self.smtp_json()});
        if !policy.is_null() {
            body["policy"] = policy;
        }
        let r = self.post("/v1/tenants", ADMIN, body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        (
            v["id"].as_str().unwrap().to_string(),
            v["secret_key"].as_str().unwrap().to_string(),
        )
    }

    pub async fn tenant(&self) -> (String, String) {
        self.tenant_with(Value::Null).await
    }

    /// Let the tenant text numbers of these countries (the SMS fraud guard texts none by
    /// default, API.md §17.1).
    pub async fn allow_sms(&self, secret: &str, countries: &[&str]) {
        let r = self
            .patch(
                "/v1/tenant",
                secret,
                json!({"sms": {"allowed_countries": countries}}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    /// Mint a code for `email` and read it out of the received message.
    pub async fn mint(&self, secret: &str, email: &str) -> (String, String) {
        self.mint_purpose(secret, email, None).await
    }

    pub async fn mint_purpose(
        &self,
        secret: &str,
        email: &str,
        purpose: Option<&str>,
    ) -> (String, String) {
        let given = email;
        // The envelope carries the local part as given and the domain lower-cased.
        let rcpt = match email.rsplit_once('@') {
            Some((l, d)) => format!("{l}@{}", d.to_ascii_lowercase()),
            None => email.to_string(),
        };
        let email = rcpt.as_str();
        let before = self.smtp.count_to(email);
        let mut body = json!({"email": given});
        if let Some(p) = purpose {
            body["purpose"] = json!(p);
        }
        let r = self.post("/v1/otp", secret, body).await;
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{v}");
        let msg = self.smtp.wait_for(email, before + 1).await;
        (v["shareable_key"].as_str().unwrap().to_string(), msg.code())
    }

    /// A code's state: `GET /v1/otp/{key}`'s body.
    pub async fn code_status(&self, secret: &str, key: &str) -> Value {
        self.get(&format!("/v1/otp/{key}"), secret)
            .await
            .json()
            .await
            .unwrap()
    }

    pub async fn verify(&self, secret: &str, key: &str, otp: &str) -> (StatusCode, Value) {
        let r = self
            .post(
                "/v1/otp/verify",
                secret,
                json!({"shareable_key": key, "otp": otp}),
            )
            .await;
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

/// The PostgreSQL server this suite runs on: `Some` only in the `api_postgres` run (the same
/// tests, built a second time from tests/api_postgres when `OTPMINT_TEST_POSTGRES_URL` is set).
pub fn postgres_base_url() -> Option<String> {
    if env!("CARGO_CRATE_NAME") != "api_postgres" {
        return None;
    }
    Some(std::env::var("OTPMINT_TEST_POSTGRES_URL").expect("OTPMINT_TEST_POSTGRES_URL is set"))
}

pub fn on_postgres() -> bool {
    postgres_base_url().is_some()
}

/// For the few tests about SQLite's own files: true (and says so) in the PostgreSQL run.
pub fn skip_on_postgres(why: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped on PostgreSQL: {why}");
        true
    } else {
        false
    }
}

/// Run blocking PostgreSQL client work off the async test runtime.
pub fn pg_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

/// `base` with its database name replaced by `name`.
pub fn pg_url_for(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base, String::new()),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let head = match head[authority_start..].find('/') {
        Some(i) => &head[..authority_start + i],
        None => head,
    };
    format!("{head}/{name}{query}")
}

/// A new, empty database for one test; databases left by earlier runs whose process is gone
/// are dropped the first time.
pub fn fresh_pg_database(base: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static CLEANED: std::sync::Once = std::sync::Once::new();
    let pid = std::process::id();
    let name = format!(
        "otpmint_t_{pid}_{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let (b, n) = (base.to_string(), name.clone());
    pg_blocking(move || {
        let mut c = postgres::Client::connect(&b, postgres::NoTls).unwrap();
        CLEANED.call_once(|| {
            let stale = c
                .query(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'otpmint\\_t\\_%'",
                    &[],
                )
                .unwrap();
            for row in stale {
                let db: String = row.get(0);
                let owner = db.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
                let alive = owner.is_some_and(|p| {
                    p == pid || std::path::Path::new(&format!("/proc/{p}")).exists()
                });
                if !alive {
                    let _ =
                        c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"));
                }
            }
        });
        c.batch_execute(&format!("CREATE DATABASE \"{n}\""))
            .unwrap();
    });
    pg_url_for(base, &name)
}

/// A finished command as (success, stdout, stderr).
pub fn outcome(out: std::process::Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Run the otpmint binary with a config file.
pub fn otpmint_with(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    outcome(
        std::process::Command::new(env!("CARGO_BIN_EXE_otpmint"))
            .arg("--config")
            .arg(config)
            .args(args)
            .output()
            .unwrap(),
    )
}

/// A code of the same length that is certainly not `code`.
pub fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| char::from(b'0' + ((c as u8 - b'0' + 1) % 10)))
        .collect()
}

/// A lock another connection holds, on a thread of its own, until released or dropped:
/// SQLite's write lock, or one PostgreSQL row's.
pub struct HeldLock(Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>);

impl HeldLock {
    /// SQLite's write lock (`BEGIN IMMEDIATE`) on the database file `db`: every write of the
    /// app waits for it, and answers 503 past its bound.
    pub fn sqlite_write(db: &std::path::Path) -> HeldLock {
        let db = db.to_path_buf();
        HeldLock::hold(move |held| {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            held();
            c.execute_batch("ROLLBACK").unwrap();
        })
    }

    /// The row of `table` whose `id` is `id`, locked (`FOR UPDATE`) by a transaction on the
    /// PostgreSQL database at `url`: a write of that row waits for it.
    pub fn pg_row(url: &str, table: &'static str, id: &str) -> HeldLock {
        HeldLock::pg_row_in(url, table, id, "UPDATE")
    }

    /// As [`HeldLock::pg_row`], in the mode an update of the row's other columns takes
    /// (`FOR NO KEY UPDATE`): a write of that row waits for it, a new row referring to it
    /// does not.
    pub fn pg_row_no_key(url: &str, table: &'static str, id: &str) -> HeldLock {
        HeldLock::pg_row_in(url, table, id, "NO KEY UPDATE")
    }

    /// What `lock` (a statement that takes locks) takes, in a transaction of its own on the
    /// PostgreSQL database at `url`.
    pub fn pg_sql(url: &str, lock: &str) -> HeldLock {
        let (url, lock) = (url.to_string(), lock.to_string());
        HeldLock::hold(move |held| {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut tx = c.transaction().unwrap();
            tx.batch_execute(&lock).unwrap();
            held();
            tx.rollback().unwrap();
        })
    }

    fn pg_row_in(url: &str, table: &'static str, id: &str, mode: &'static str) -> HeldLock {
        let (url, id) = (url.to_string(), id.to_string());
        HeldLock::hold(move |held| {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut tx = c.transaction().unwrap();
            let q = format!("SELECT 1 FROM {table} WHERE id = $1 FOR {mode}");
            tx.execute(q.as_str(), &[&id]).unwrap();
            held();
            tx.rollback().unwrap();
        })
    }

    /// Run `lock` on a thread of its own; it calls `held` once it holds its lock, which
    /// returns when the lock is to go. Once this returns, the lock is held.
    fn hold(lock: impl FnOnce(Box<dyn FnOnce()>) + Send + 'static) -> HeldLock {
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            lock(Box::new(move || {
                locked_tx.send(()).unwrap();
                let _ = release_rx.recv_timeout(std::time::Duration::from_secs(60));
            }))
        });
        locked_rx.recv().unwrap();
        HeldLock(Some((release_tx, holder)))
    }

    /// Let the lock go, and wait until it is gone.
    pub fn release(mut self) {
        self.let_go();
    }

    fn let_go(&mut self) {
        if let Some((release, holder)) = self.0.take() {
            let _ = release.send(());
            let _ = holder.join();
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.let_go();
    }
}
