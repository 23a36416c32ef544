//! The real binary reloading and running: SIGHUP applies live settings and names those
//! needing a restart, every thread runs under the configured CPU scheduling, and secrets come
//! from files at start and on SIGHUP (with the healthcheck exiting by readiness).

use crate::binary::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_live_settings_and_names_those_needing_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("otpmint.toml");
    let base = "[server]\nbind = \"127.0.0.1:0\"\n[admin]\ntoken = \"admin-token-for-reload-1\"\n[smtp]\nallow_private_hosts = true\n";
    std::fs::write(&conf, format!("{base}[registration]\nmode = \"admin\"\n")).unwrap();
    let mut cmd = otpmint(dir.path());
    cmd.arg("--config").arg(&conf);
    let running = serve(cmd).unwrap();
    let base_url = format!("http://127.0.0.1:{}", running.port);
    let client = reqwest::Client::new();
    let body =
        json!({"name": "x", "smtp": {"host": "127.0.0.1", "port": 587, "from": "a@b.example"}});
    let r = client
        .post(format!("{base_url}/v1/tenants"))
        .bearer_auth("admin-token-for-reload-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let reload = |running: &Running| running.reload();
    // a broken file is refused and nothing changes
    std::fs::write(
        &conf,
        format!("{base}[registration]\nmode = \"sometimes\"\n"),
    )
    .unwrap();
    let line = reload(&running);
    assert!(line.contains("reload failed"), "{line}");
    // So is one that only a restart would take but that `serve` refuses at start (here a
    // PostgreSQL URL whose sslmode the connector does not know): no reload may pass a file
    // the next start fails on. The URL's password is not repeated.
    std::fs::write(
        &conf,
        format!("{base}[database]\nurl = \"postgres://u:db-secret-9@h/db?sslmode=zz\"\n"),
    )
    .unwrap();
    let line = reload(&running);
    assert!(
        line.contains("reload failed") && line.contains("sslmode"),
        "{line}"
    );
    assert!(!line.contains("db-secret-9"), "{line}");
    // A PostgreSQL URL other than the running database's is opened as the next start would
    // open it: one that does not answer is refused, its password not repeated.
    std::fs::write(
        &conf,
        format!("{base}[database]\nurl = \"postgres://u:db-secret-9@127.0.0.1:1/db\"\n"),
    )
    .unwrap();
    let line = reload(&running);
    assert!(line.contains("reload failed"), "{line}");
    assert!(!line.contains("db-secret-9"), "{line}");
    // And a master key file moved away: the running server holds its key, the next start
    // would refuse the database's keyring (found by a black-box audit).
    std::fs::write(&conf, format!("{base}[registration]\nmode = \"admin\"\n")).unwrap();
    let key = dir.path().join("data/master.key");
    let aside = dir.path().join("master.key.aside");
    std::fs::rename(&key, &aside).unwrap();
    let line = reload(&running);
    assert!(
        line.contains("reload failed") && line.contains("crypto.master_key_file"),
        "{line}"
    );
    std::fs::rename(&aside, &key).unwrap();
    // And a file naming another installation, whose keyring this master key does not open:
    // `config check` and the next start refuse it, so the reload does too (found by a
    // black-box audit: the running database's keyring was checked, not the named one's).
    let other = tempfile::tempdir().unwrap();
    let made = otpmint(other.path()).arg("migrate").output().unwrap();
    assert!(made.status.success(), "{made:?}");
    let other_db = other.path().join("data/otpmint.db");
    assert!(other_db.exists());
    std::fs::write(
        &conf,
        format!(
            "{base}[database]\nurl = \"sqlite://{}\"\n",
            other_db.display()
        ),
    )
    .unwrap();
    let line = reload(&running);
    assert!(
        line.contains("reload failed") && line.contains("keyring"),
        "{line}"
    );
    let r = client
        .post(format!("{base_url}/v1/tenants"))
        .bearer_auth("admin-token-for-reload-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    std::fs::write(&conf, "[server]\nbind = \"127.0.0.1:0\"\nworkers = 1\n[admin]\ntoken = \"admin-token-for-reload-1\"\n[smtp]\nallow_private_hosts = true\n[registration]\nmode = \"closed\"\n[log]\nlevel = \"warn\"\n").unwrap();
    let line = reload(&running);
    let v: Value = serde_json::from_str(&line).unwrap();
    assert!(
        v["applied"].as_str().unwrap().contains("registration.mode"),
        "{line}"
    );
    assert!(
        v["applied"].as_str().unwrap().contains("log.level"),
        "{line}"
    );
    assert!(
        v["need_restart"]
            .as_str()
            .unwrap()
            .contains("server.workers"),
        "{line}"
    );
    assert!(!line.contains("admin-token-for-reload-1"));
    let r = client
        .post(format!("{base_url}/v1/tenants"))
        .bearer_auth("admin-token-for-reload-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// The Linux scheduling policy (`SCHED_OTHER` 0, `SCHED_BATCH` 3) of every thread of a
/// process, from /proc (the 41st field of each thread's stat).
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // The name is in parentheses and may hold spaces: count fields after it.
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_string();
        let policy = rest.split_whitespace().nth(38).unwrap().parse().unwrap();
        out.push((name, policy));
    }
    out
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_thread_runs_under_the_configured_cpu_scheduling() {
    for (setting, policy) in [(None, 3), (Some("normal"), 0), (Some("batch"), 3)] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = otpmint(dir.path());
        cmd.env("OTPMINT__SERVER__BIND", "127.0.0.1:0");
        if let Some(s) = setting {
            cmd.env("OTPMINT__SERVER__SCHEDULING", s);
        }
        let running = serve(cmd).unwrap();
        // A request that writes, so the blocking pool and the database writer have run.
        let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", running.port))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let threads = thread_policies(running.child.id());
        let names: Vec<&str> = threads.iter().map(|(n, _)| n.as_str()).collect();
        for wanted in ["actix-server wo", "otpmint-hash-0", "otpmint-db-writ"] {
            assert!(names.contains(&wanted), "{wanted} in {names:?}");
        }
        assert!(
            threads.iter().all(|(_, p)| *p == policy),
            "{setting:?}: {threads:?}"
        );
    }
    // A value that is not a policy is refused before anything starts.
    let dir = tempfile::tempdir().unwrap();
    let out = otpmint(dir.path())
        .args(["config", "check"])
        .env("OTPMINT__SERVER__SCHEDULING", "realtime")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.scheduling"));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_come_from_files_at_start_and_on_sighup_and_healthcheck_exits_by_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(
        creds.join("admin-token"),
        "admin-token-from-a-file-000001\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("metrics-token"),
        "metrics-token-from-a-file\n",
    )
    .unwrap();
    let db = dir.path().join("elsewhere.db");
    std::fs::write(
        dir.path().join("db-url"),
        format!("sqlite://{}\n", db.display()),
    )
    .unwrap();
    let conf = dir.path().join("otpmint.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\n[admin]\ntoken_file = \"admin-token\"\n[metrics]\ntoken_file = \"{}\"\n[database]\nurl_file = \"{}\"\n",
            dir.path().join("metrics-token").display(),
            dir.path().join("db-url").display()
        ),
    )
    .unwrap();
    let mut cmd = otpmint(dir.path());
    cmd.arg("--config")
        .arg(&conf)
        .env("CREDENTIALS_DIRECTORY", &creds);
    let running = serve(cmd).unwrap();
    assert!(db.exists(), "the database is where url_file says");
    let base = format!("http://127.0.0.1:{}", running.port);
    let client = reqwest::Client::new();
    let tenants = |token: &'static str| {
        client
            .get(format!("{base}/v1/tenants"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        tenants("admin-token-from-a-file-000001")
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .bearer_auth("metrics-token-from-a-file")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);

    // A new token in the file takes effect on SIGHUP; the old one stops.
    std::fs::write(creds.join("admin-token"), "admin-token-from-a-file-000002").unwrap();
    let line = running.reload();
    assert!(!line.contains("admin-token-from-a-file"), "{line}");
    assert_eq!(
        tenants("admin-token-from-a-file-000002")
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        tenants("admin-token-from-a-file-000001")
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // healthcheck: 0 while /readyz answers 200, 1 when nothing answers.
    let check = |url: String| {
        otpmint(dir.path())
            .args(["healthcheck", "--url", &url])
            .output()
            .unwrap()
    };
    let ok = check(base.clone());
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // A proxy in the environment (Docker puts its proxy settings into every container) is
    // not asked: the check goes straight to the server.
    let no_proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", no_proxy.local_addr().unwrap());
    drop(no_proxy);
    let proxied = otpmint(dir.path())
        .args(["healthcheck", "--url", &base])
        .env("HTTP_PROXY", &proxy)
        .env("http_proxy", &proxy)
        .env("ALL_PROXY", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    assert_eq!(
        proxied.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&proxied.stderr)
    );
    // Without --url only server.bind is read: a token file rewritten badly since the start
    // (the server keeps the token it has) fails no health check; a usage error is 1, not 2.
    std::fs::write(creds.join("admin-token"), "two\nlines\n").unwrap();
    let by_bind = otpmint(dir.path())
        .arg("--config")
        .arg(&conf)
        .arg("healthcheck")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env(
            "OTPMINT__SERVER__BIND",
            format!("127.0.0.1:{}", running.port),
        )
        .output()
        .unwrap();
    assert_eq!(
        by_bind.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&by_bind.stderr)
    );
    std::fs::write(creds.join("admin-token"), "admin-token-from-a-file-000002").unwrap();
    let usage = otpmint(dir.path())
        .args(["healthcheck", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(1));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let down = check(dead);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("not ready"));
    // A silent server: the check gives up after 2 s and fails.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    let stalled = check(format!("http://{}", silent.local_addr().unwrap()));
    assert_eq!(stalled.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10));

    // Both a key and its file: a config error naming them, nothing served.
    std::fs::write(
        &conf,
        "[admin]\ntoken = \"inline-admin-token-0000000000001\"\ntoken_file = \"admin-token\"\n",
    )
    .unwrap();
    let out = otpmint(dir.path())
        .arg("--config")
        .arg(&conf)
        .args(["config", "check"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.token_file") && err.contains("both set"),
        "{err}"
    );
    assert!(
        !err.contains("inline-admin-token") && !err.contains("from-a-file"),
        "{err}"
    );
}
