//! The real binary: first run, key-file safety, a database it cannot write, a port taken,
//! `config check`, tenants managed from the CLI, and a scan of its log output for secrets at
//! trace level. (Reloads, CPU scheduling and secrets from files: binary_reload.rs; the other
//! CLI commands: cli.rs.)

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::smtp::{SmtpServer, SMTP_PASS, SMTP_USER};

const BIN: &str = env!("CARGO_BIN_EXE_otpmint");

pub(crate) fn otpmint(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("OTPMINT") {
            c.env_remove(k);
        }
    }
    c
}

pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) port: u16,
    /// The database the "listening" line names.
    pub(crate) database: String,
    /// The lines before the "listening" line.
    pub(crate) before: Vec<String>,
    pub(crate) lines: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `otpmint` with all its stderr lines collected (`Running::lines`); `port` and
/// `database` are known once [`Running::listening`] has read the "listening" line.
pub(crate) fn spawn(mut cmd: Command) -> Running {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        port: 0,
        database: String::new(),
        before: Vec::new(),
        lines: rx,
    }
}

impl Running {
    /// Read lines until the "listening" line (its port and database taken); the lines before
    /// it when none comes within 30 s of the last.
    pub(crate) fn listening(&mut self) -> Result<(), String> {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("otpmint listening") => {
                    let v: Value = serde_json::from_str(&line).unwrap();
                    self.port = v["port"].as_u64().unwrap() as u16;
                    self.database = v["database"].as_str().unwrap_or_default().to_string();
                    return Ok(());
                }
                Ok(line) => self.before.push(line),
                Err(_) => return Err(self.before.join("\n")),
            }
        }
    }
}

impl Running {
    /// Send SIGHUP and return the line that says how the reload went.
    #[cfg(unix)]
    pub(crate) fn reload(&self) -> String {
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .expect("a reload line");
            if line.contains("configuration reload") {
                return line;
            }
        }
    }
}

/// Start `otpmint` and wait for its "listening" line; all stderr lines are collected (the
/// process is killed when it does not listen: `Running`'s drop).
pub(crate) fn serve(cmd: Command) -> Result<Running, String> {
    let mut running = spawn(cmd);
    running.listening()?;
    Ok(running)
}

#[test]
fn first_run_creates_the_database_and_a_0600_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = otpmint(dir.path());
    cmd.env("OTPMINT__SERVER__BIND", "127.0.0.1:0");
    let running = serve(cmd).unwrap();
    assert!(running.port > 0);
    assert!(dir.path().join("data/otpmint.db").exists());
    // The start says which database it uses.
    assert!(
        running.database.starts_with("sqlite ") && running.database.ends_with("otpmint.db"),
        "{}",
        running.database
    );
    let key = dir.path().join("data/master.key");
    let meta = std::fs::metadata(&key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(text.trim().len(), 44, "one base64 line of 32 bytes");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The database and its side files are private too (API.md §6.26).
        for f in ["otpmint.db", "otpmint.db-wal", "otpmint.db-shm"] {
            let p = dir.path().join("data").join(f);
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f} is {mode:o}");
        }
    }
    drop(running);

    // A key file others can read is named at start, with its mode.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut cmd = otpmint(dir.path());
        cmd.env("OTPMINT__SERVER__BIND", "127.0.0.1:0");
        let running = serve(cmd).unwrap();
        let warned = running
            .before
            .iter()
            .filter(|l| l.contains("readable by others"));
        assert_eq!(warned.count(), 1, "once at start: {:?}", running.before);
        drop(running);
        let mut cmd = otpmint(dir.path());
        cmd.args(["tenant", "list"]);
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("readable by others")
                && err.contains("0644")
                && err.contains("master.key"),
            "{err}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

        // So is a database file whose mode was opened up: its -wal and -shm take that mode
        // (found by the filesystem audit: nothing was said).
        let db = dir.path().join("data/otpmint.db");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut cmd = otpmint(dir.path());
        cmd.env("OTPMINT__SERVER__BIND", "127.0.0.1:0");
        let running = serve(cmd).unwrap();
        assert!(
            running
                .before
                .iter()
                .any(|l| l.contains("other than its owner")
                    && l.contains("0644")
                    && l.contains("otpmint.db")),
            "{:?}",
            running.before
        );
        drop(running);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // A missing key file with a non-empty database refuses to start and creates nothing.
    std::fs::remove_file(&key).unwrap();
    let mut cmd = otpmint(dir.path());
    cmd.env("OTPMINT__SERVER__BIND", "127.0.0.1:0");
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("master key file") && err.contains("missing"),
        "{err}"
    );
    assert!(!key.exists(), "no new key may replace the old one");

    // A wrong master key refuses to start with one clear line.
    let mut cmd = otpmint(dir.path());
    cmd.env("OTPMINT__SERVER__BIND", "127.0.0.1:0");
    cmd.env(
        "OTPMINT__CRYPTO__MASTER_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
}

/// A database file the server may read but not write (a backup copied into place by another
/// user, say) is refused at start, naming the file — not opened read-only by SQLite without a
/// word, then served ready with every write answered 503. As root the server runs as
/// `nobody` (root may write any file).
#[cfg(unix)]
#[test]
fn a_database_file_the_server_cannot_write_is_refused_at_start() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let out = otpmint(dir.path()).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let data = dir.path().join("data");
    let db = data.join("otpmint.db");
    // Every page in the file itself: the test removes the -wal and -shm files below, and
    // copies the file alone (a -wal the CLI left with pages in it would go with them).
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        let busy: i64 = c
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(busy, 0);
    }
    let key = std::fs::read_to_string(data.join("master.key")).unwrap();
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    let root = std::fs::metadata(&db).unwrap().uid() == 0;
    // The server as a user the files' modes bind: `nobody` when this runs as root (root may
    // write any file), else this user.
    let server = || {
        let mut c = if root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
            c.current_dir(dir.path());
            for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTPMINT")) {
                c.env_remove(k);
            }
            c
        } else {
            otpmint(dir.path())
        };
        c.env("OTPMINT__SERVER__BIND", "127.0.0.1:0")
            .env("OTPMINT__CRYPTO__MASTER_KEY", key.trim())
            .env("OTPMINT__CRYPTO__MASTER_KEY_FILE", "");
        c
    };
    if root {
        // Another user's file it may read, in a directory it may write.
        mode(dir.path(), 0o755).unwrap();
        mode(&data, 0o777).unwrap();
        mode(&db, 0o644).unwrap();
    } else {
        mode(&db, 0o444).unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let err = match serve(server()) {
        Ok(_) => panic!("it served a database it cannot write"),
        Err(e) => e,
    };
    assert!(
        err.contains("cannot be written by this process") && err.contains("otpmint.db"),
        "{err}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before, "the file is untouched");

    // A file it may write in a directory where it may create nothing (SQLite's -wal and
    // -shm go there): the directory is named (before: "attempt to write a readonly
    // database", of a file that may be written).
    for side in ["otpmint.db-wal", "otpmint.db-shm"] {
        let _ = std::fs::remove_file(data.join(side));
    }
    if root {
        std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
        mode(&data, 0o755).unwrap();
    } else {
        mode(&data, 0o555).unwrap();
    }
    mode(&db, 0o600).unwrap();
    let err = match serve(server()) {
        Ok(_) => panic!("it served a database whose directory takes no new file"),
        Err(e) => e,
    };
    assert!(
        err.contains("cannot be written by this process")
            && err.contains("data")
            && !err.contains("otpmint.db ")
            && err.contains("-wal and -shm"),
        "{err}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before, "the file is untouched");
    mode(&data, 0o755).unwrap();

    // A link to the database from a directory that takes no new file, the file itself in
    // one that does: SQLite puts -wal and -shm beside the file, so it starts (the checks
    // look where the file really is, not beside the link).
    let (ro, rw) = (dir.path().join("ro"), dir.path().join("rw"));
    std::fs::create_dir(&ro).unwrap();
    std::fs::create_dir(&rw).unwrap();
    let real = rw.join("otpmint.db");
    std::fs::copy(&db, &real).unwrap();
    std::os::unix::fs::symlink(&real, ro.join("otpmint.db")).unwrap();
    if root {
        for p in [&rw, &real] {
            std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
        }
    }
    mode(&ro, 0o555).unwrap();
    let mut cmd = server();
    cmd.env(
        "OTPMINT__DATABASE__URL",
        format!("sqlite://{}", ro.join("otpmint.db").display()),
    );
    let running = serve(cmd);
    mode(&ro, 0o755).unwrap();
    let running = running.unwrap_or_else(|e| panic!("a linked database was refused: {e}"));
    assert!(rw.join("otpmint.db-wal").exists());
    drop(running);
}

/// A start whose port another process holds fails saying so, before it makes anything: no
/// database and no master key are left behind by a start that never served.
#[test]
fn a_start_on_a_port_already_taken_fails_and_makes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let mut cmd = otpmint(dir.path());
    cmd.env("OTPMINT__SERVER__BIND", &bind);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("cannot listen on {bind}")), "{err}");
    assert!(
        !dir.path().join("data/otpmint.db").exists(),
        "a database was made"
    );
    assert!(
        !dir.path().join("data/master.key").exists(),
        "a master key was made"
    );
}

#[test]
fn config_check_names_the_bad_key_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "[server]\nbnd = \"x\"\n").unwrap();
    let out = otpmint(dir.path())
        .args(["--config", "bad.toml", "config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bnd") && err.contains("bad.toml"), "{err}");
    // OTPMINT_CONFIG names the file when --config does not; set but empty, it names none.
    for (value, ok) in [("bad.toml", false), ("", true)] {
        let out = otpmint(dir.path())
            .args(["config", "check"])
            .env("OTPMINT_CONFIG", value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "OTPMINT_CONFIG={value:?}: {err}");
    }

    let out = otpmint(dir.path())
        .args(["config", "check"])
        .env("OTPMINT__ADMIN__TOKEN", "super-secret-admin-token")
        .env("OTPMINT__OTP__TTL_SECONDS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("otp.ttl_seconds"));

    let out = otpmint(dir.path())
        .args(["config", "check"])
        .env("OTPMINT__ADMIN__TOKEN", "super-secret-admin-token")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[server]") && text.contains("<redacted>"));
    assert!(!text.contains("super-secret-admin-token"));
    // It says which database the configuration points at.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("database: sqlite") && err.contains("otpmint.db"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_tenants_and_logs_never_show_secrets() {
    let smtp = SmtpServer::start().await;
    let hooks = otpmint::testkit::http::HttpReceiver::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let conf = format!(
        "[server]\nbind = \"127.0.0.1:0\"\n[admin]\ntoken = \"admin-token-never-logged-42\"\n[smtp]\nallow_private_hosts = true\nallowed_ports = [{}]\nextra_root_certificates = [\"{}\"]\n[webhooks]\nallow_private_hosts = true\nextra_root_certificates = [\"{}\"]\n[log]\nlevel = \"trace\"\n",
        smtp.port,
        smtp.ca_path.display(),
        hooks.ca_path.display()
    );
    std::fs::write(dir.path().join("otpmint.toml"), conf).unwrap();
    std::fs::write(dir.path().join("pw"), format!("{SMTP_PASS}\n")).unwrap();
    let cli = |args: &[&str]| {
        crate::helpers::outcome(
            otpmint(dir.path())
                .arg("--config")
                .arg("otpmint.toml")
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let port = smtp.port.to_string();
    // The database and key are made by `migrate` (or `serve`), never by other commands.
    let (ok, _, err) = cli(&["migrate"]);
    assert!(ok, "{err}");
    // `tenant create` with the test relay on `port`.
    let create = |name: &str, port: &str| {
        cli(&[
            "tenant",
            "create",
            "--name",
            name,
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            port,
            "--smtp-username",
            SMTP_USER,
            "--smtp-from",
            "Acme <no-reply@acme.example>",
            "--smtp-password-file",
            "pw",
            "--json",
        ])
    };
    let (ok, out, err) = create("Acme", &port);
    assert!(ok, "{err}");
    let t: Value = serde_json::from_str(out.trim()).unwrap();
    let id = t["id"].as_str().unwrap().to_string();
    let sk = t["secret_key"].as_str().unwrap().to_string();
    let (ok, out, _) = cli(&["tenant", "list"]);
    assert!(ok && out.contains(&id) && out.starts_with("ID"), "{out}");
    let (ok, out, _) = cli(&["tenant", "show", &id]);
    assert!(ok && out.contains("\"Acme\""));
    // A failure is one clear line on stderr (API.md §5), naming the database (§18.8).
    let (ok, _, err) = cli(&["tenant", "show", "tnt_nonexistent000000000"]);
    assert!(
        !ok && err.trim().lines().count() == 1
            && err.starts_with("error: no such tenant")
            && err.contains("database: sqlite"),
        "{err}"
    );
    let (ok, out, err) = cli(&["smtp", "test", &id, "--to", "ops@example.com"]);
    assert!(ok, "{out}{err}");
    assert_eq!(smtp.count_to("ops@example.com"), 1);
    // At send time too: a port the server stopped allowing is named as such, not as a
    // private host (which this server allows).
    let out = otpmint(dir.path())
        .args([
            "--config",
            "otpmint.toml",
            "smtp",
            "test",
            &id,
            "--to",
            "ops@example.com",
        ])
        .env("OTPMINT__SMTP__ALLOWED_PORTS", "587")
        .output()
        .unwrap();
    let (ok, _, err) = crate::helpers::outcome(out);
    assert!(
        !ok && err.contains("smtp.allowed_ports") && !err.contains("allow_private_hosts"),
        "{err}"
    );
    assert_eq!(smtp.count_to("ops@example.com"), 1);
    // A login needs both halves: a username without its password (or the reverse) is
    // refused, naming what is missing, and creates nothing; an empty (or unmounted)
    // password file is a mistake, not a password: refused, naming the flag and the file.
    std::fs::write(dir.path().join("empty.pw"), "\n").unwrap();
    // A second line is never silently dropped (as in the configuration's secret files).
    std::fs::write(
        dir.path().join("two.pw"),
        format!("{SMTP_PASS}\nsomething else\n"),
    )
    .unwrap();
    let username = ["--smtp-username", SMTP_USER].as_slice();
    for (login, says) in [
        (username, ["--smtp-username", "--smtp-password-file"]),
        (
            &["--smtp-password-file", "pw"],
            ["--smtp-username", "--smtp-password-file"],
        ),
        (
            &[
                "--smtp-username",
                SMTP_USER,
                "--smtp-password-file",
                "empty.pw",
            ],
            ["--smtp-password-file empty.pw", "empty"],
        ),
        (
            &[
                "--smtp-username",
                SMTP_USER,
                "--smtp-password-file",
                "two.pw",
            ],
            ["--smtp-password-file two.pw", "more than one line"],
        ),
    ] {
        let mut args = vec![
            "tenant",
            "create",
            "--name",
            "Half",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            &port,
            "--smtp-from",
            "x@acme.example",
        ];
        args.extend_from_slice(login);
        let (ok, _, err) = cli(&args);
        assert!(!ok && says.iter().all(|s| err.contains(s)), "{err}");
    }
    let (_, out, _) = cli(&["tenant", "list"]);
    assert!(!out.contains("Half"), "{out}");
    // A policy refusal names the setting that would allow it, as the HTTP answer does.
    let (ok, _, err) = create("Port 25", "25");
    assert!(
        !ok && err.trim().lines().count() == 1 && err.contains("smtp.allowed_ports"),
        "{err}"
    );
    // A URL is no host: the field and what it must be, not a policy's advice.
    let (ok, _, err) = cli(&[
        "tenant",
        "create",
        "--name",
        "Url",
        "--smtp-host",
        "smtp://localhost",
        "--smtp-port",
        &port,
        "--smtp-username",
        SMTP_USER,
        "--smtp-from",
        "x@acme.example",
        "--smtp-password-file",
        "pw",
    ]);
    assert!(
        !ok && err.contains("smtp.host: must be a host name or IP address"),
        "{err}"
    );

    let mut cmd = otpmint(dir.path());
    cmd.args(["--config", "otpmint.toml"]);
    let running = serve(cmd).unwrap();
    let base = format!("http://127.0.0.1:{}", running.port);
    let client = reqwest::Client::new();
    let r = client
        .put(format!("{base}/v1/tenant/webhook"))
        .bearer_auth(&sk)
        .json(&json!({"url": hooks.url("/h"), "events": ["otp.sent", "otp.verified"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let hook_secret = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let r = client
        .post(format!("{base}/v1/otp"))
        .bearer_auth(&sk)
        .header("X-Request-Id", "mint-req-42")
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let key = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    let code = smtp.wait_for("ada@example.com", 1).await.code();
    let r = client
        .get(format!("{base}/v1/otp/{key}"))
        .bearer_auth(&sk)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .post(format!("{base}/v1/otp/verify"))
        .bearer_auth(&sk)
        .json(&json!({"shareable_key": key, "otp": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .get(format!("{base}/v1/tenants"))
        .bearer_auth("admin-token-never-logged-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // both events went out over HTTPS (their bodies hold the shareable key and address)
    let events = hooks.wait_for(2).await;
    assert!(events.iter().any(|e| e.json()["type"] == "otp.verified"));

    // A refused message: its log line says what to check, in words (API.md §18.8). Its
    // code was minted (and failed): the minted counter counts it, as the statistics do.
    let metric = |series: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let text = client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let series = format!("{series} ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str())?.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    let minted = || metric("otpmint_codes_minted_total{mode=\"sync\"}".to_string());
    let before = minted().await;
    smtp.set_mode(crate::smtp::Mode::RejectRecipients);
    let r = client
        .post(format!("{base}/v1/otp"))
        .bearer_auth(&sk)
        .json(&json!({"email": "bo@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    smtp.set_mode(crate::smtp::Mode::Normal);
    assert_eq!(minted().await, before + 1.0);

    // Verifies count by result on every route, the compat one's unknown and malformed keys
    // too (its tenant is found by the key: none owns these); one with no key is not a verify.
    let verifies = |result: &str| metric(format!("otpmint_verify_total{{result=\"{result}\"}}"));
    let not_found = verifies("not_found").await;
    for (shareable, otp) in [("NOSUCHKEYX", "000000"), (key.as_str(), "0")] {
        let r = client
            .post(format!("{base}/verify-otp"))
            .json(&json!({"shareableKey": shareable, "otp": otp}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    let r = client
        .post(format!("{base}/v1/otp/verify"))
        .json(&json!({"shareable_key": key, "otp": "000000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(verifies("not_found").await, not_found + 2.0);

    // disable via CLI while running: the key stops working
    let (ok, _, _) = cli(&["tenant", "disable", &id]);
    assert!(ok);
    let r = client
        .get(format!("{base}/v1/tenant"))
        .bearer_auth(&sk)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A malformed request (a NUL in a header) is the client's 400, not the server's error.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", running.port))
            .await
            .unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\0b\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut log = String::new();
    while let Ok(l) = running.lines.try_recv() {
        log.push_str(&l);
        log.push('\n');
    }
    assert!(
        log.contains("\"route\":\"/v1/otp/{key}\""),
        "access log lines are there: {log}"
    );
    assert!(log.contains("a***@example.com"), "recipients are masked");
    assert!(
        !log.lines()
            .any(|l| l.contains("\"ERROR\"") && l.contains("parse error")),
        "a client's malformed request fills no error log: {log}"
    );
    // Lines logged by the work a request did carry its id (here: the delivery of the mint).
    assert!(
        log.lines()
            .any(|l| l.contains("code sent") && l.contains("mint-req-42")),
        "the delivery line names its request: {log}"
    );
    assert!(
        log.lines().any(|l| l.contains("delivery attempt failed")
            && l.contains("smtp_rejected")
            && l.contains("The relay refused the message")),
        "the failure's line says what to check: {log}"
    );
    use base64::Engine;
    let auth_plain =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{SMTP_USER}\0{SMTP_PASS}"));
    assert!(!shows_code(&log, &code), "log output holds the code");
    for secret in [
        key.as_str(),
        sk.as_str(),
        SMTP_PASS,
        "admin-token-never-logged-42",
        auth_plain.as_str(),
        "ada@example.com",
        hook_secret.as_str(),
        &hook_secret[6..],
    ] {
        assert!(
            !log.contains(secret),
            "log output holds a secret ({} chars)",
            secret.len()
        );
    }
    let master = std::fs::read_to_string(dir.path().join("data/master.key")).unwrap();
    assert!(!log.contains(master.trim()));
}

/// Whether a log shows a code: its digits as a run of their own, not inside a longer number
/// or as the fraction of one — a trace log's timestamps and durations hold thousands of
/// digit runs, among them, now and then, the six digits of a code (CI saw one).
fn shows_code(log: &str, code: &str) -> bool {
    log.match_indices(code).any(|(at, _)| {
        let before = log[..at].chars().next_back();
        let after = log[at + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_and_oauth2_relays_leave_no_secret_in_the_logs() {
    use base64::Engine;
    use otpmint::testkit::oauth2::{TokenServer, CLIENT_ID, CLIENT_SECRET};
    use otpmint::testkit::providers::{FakeProvider, POSTMARK_TOKEN, TWILIO_SID, TWILIO_TOKEN};
    let smtp = SmtpServer::start().await;
    let tokens = TokenServer::start(SMTP_USER).await;
    smtp.accept_xoauth2(tokens.check());
    let postmark = FakeProvider::start("postmark").await;
    let twilio = FakeProvider::start("twilio").await;
    let dir = tempfile::tempdir().unwrap();
    let conf = format!(
        "[server]\nbind = \"127.0.0.1:0\"\n[admin]\ntoken = \"admin-token-never-logged-42\"\n\
         [smtp]\nallow_private_hosts = true\nallowed_ports = [{}]\nextra_root_certificates = [\"{}\"]\n\
         [webhooks]\nallow_private_hosts = true\nextra_root_certificates = [\"{}\", \"{}\", \"{}\"]\n\
         [log]\nlevel = \"trace\"\n[delivery.provider_base_urls]\npostmark = \"{}\"\ntwilio = \"{}\"\n",
        smtp.port,
        smtp.ca_path.display(),
        tokens.rx.ca_path.display(),
        postmark.rx.ca_path.display(),
        twilio.rx.ca_path.display(),
        postmark.base_url(),
        twilio.base_url(),
    );
    std::fs::write(dir.path().join("otpmint.toml"), conf).unwrap();
    let mut cmd = otpmint(dir.path());
    cmd.args(["--config", "otpmint.toml"]);
    let running = serve(cmd).unwrap();
    let base = format!("http://127.0.0.1:{}", running.port);
    let client = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, bearer: &str, body: Value| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(bearer)
            .json(&body)
            .send()
    };
    let r = send(
        reqwest::Method::POST,
        "/v1/tenants",
        "admin-token-never-logged-42",
        json!({"name": "Acme", "smtp": {"host": "127.0.0.1", "port": smtp.port, "username": SMTP_USER,
            "from": "Acme <no-reply@acme.example>",
            "oauth2": {"token_url": tokens.url(), "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let sk = r.json::<Value>().await.unwrap()["secret_key"]
        .as_str()
        .unwrap()
        .to_string();
    for (channel, fake) in [("email", &postmark), ("sms", &twilio)] {
        let r = send(
            reqwest::Method::PUT,
            &format!("/v1/tenant/providers/{channel}"),
            &sk,
            fake.settings("fallback"),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = send(
        reqwest::Method::PATCH,
        "/v1/tenant",
        &sk,
        json!({"sms": {"allowed_countries": ["DE"]}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Through the OAuth2 relay; through Postmark once the relay is down; a text message
    // through Twilio; each verified.
    let mut codes = Vec::new();
    for (to, i) in [
        ("ada@example.com", 0),
        ("bob@example.com", 1),
        ("+4915112345678", 2),
    ] {
        if i == 1 {
            smtp.set_mode(crate::smtp::Mode::Down);
        }
        let field = if to.starts_with('+') {
            "phone"
        } else {
            "email"
        };
        let r = send(reqwest::Method::POST, "/v1/otp", &sk, json!({ field: to }))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let key = r.json::<Value>().await.unwrap()["shareable_key"]
            .as_str()
            .unwrap()
            .to_string();
        let code = match i {
            0 => smtp.wait_for(to, 1).await.code(),
            1 => postmark.wait_taken(1).await[0].code(),
            _ => twilio.wait_taken(1).await[0].code(),
        };
        let r = send(
            reqwest::Method::POST,
            "/v1/otp/verify",
            &sk,
            json!({"shareable_key": key, "otp": code}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        codes.push(code);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut log = String::new();
    while let Ok(l) = running.lines.try_recv() {
        log.push_str(&l);
        log.push('\n');
    }
    assert!(
        log.contains("provider:postmark") && log.contains("provider:twilio"),
        "{log}"
    );
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let mut secrets = vec![
        CLIENT_SECRET.to_string(),
        POSTMARK_TOKEN.to_string(),
        TWILIO_TOKEN.to_string(),
        b64(format!("{TWILIO_SID}:{TWILIO_TOKEN}")),
        "ada@example.com".into(),
        "+4915112345678".into(),
    ];
    for t in tokens.issued() {
        secrets.push(b64(format!("user={SMTP_USER}\x01auth=Bearer {t}\x01\x01")));
        secrets.push(t);
    }
    for code in &codes {
        assert!(!shows_code(&log, code), "log output holds a code");
    }
    assert!(tokens.requests() >= 1);
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "log output holds a secret ({} chars)",
            secret.len()
        );
    }
}
