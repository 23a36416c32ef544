//! Starting on PostgreSQL: a server not up yet is waited for (`database.start_wait_seconds`),
//! a refusal by the server is not.

use std::io::BufReader;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

/// A PostgreSQL server that is not up yet when `serve` starts (compose and Kubernetes start
/// both together) is waited for (`database.start_wait_seconds`), with a warning at each try,
/// and the server starts once it answers; a database that does not exist is not waited for:
/// it exits 1 at once. The other CLI commands never wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_waits_for_a_postgresql_not_up_yet_but_not_for_a_wrong_database() {
    let base = crate::helpers::postgres_base_url().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let pg = crate::helpers::fresh_pg_database(&base);
    // A port nothing listens on yet: connecting is refused until the "server" comes up.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let later = at_port(&pg, port);
    let with = |cmd: &mut Command, url: &str| {
        cmd.env("OTPMINT__DATABASE__URL", url)
            .env("OTPMINT__CRYPTO__MASTER_KEY", key)
            .env("OTPMINT__SERVER__BIND", "127.0.0.1:0")
            .env("OTPMINT__DATABASE__START_WAIT_SECONDS", "120");
    };

    // Another CLI command does not wait: refused at once (well within the pool's own wait,
    // set long here), one line.
    let mut cmd = crate::binary::otpmint(dir.path());
    with(&mut cmd, &later);
    cmd.args(["tenant", "list"]);
    let err = fails_at_once(cmd);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line, the pool's own errors muted: {err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    // With no wait, serve fails at once too, with the reason.
    let mut cmd = crate::binary::otpmint(dir.path());
    with(&mut cmd, &later);
    cmd.arg("serve")
        .env("OTPMINT__DATABASE__START_WAIT_SECONDS", "0");
    let err = fails_at_once(cmd);
    assert!(
        err.trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("Connection refused"),
        "{err}"
    );

    let mut cmd = crate::binary::otpmint(dir.path());
    with(&mut cmd, &later);
    cmd.arg("serve");
    let mut running = crate::binary::spawn(cmd);
    let next = |r: &crate::binary::Running, what: &str| -> String {
        r.lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no line while waiting for {what}"))
    };
    // Two warnings: it keeps trying, and says why and how long it still waits.
    let mut warned = Vec::new();
    while warned.len() < 2 {
        let line = next(&running, "the waiting warning");
        assert!(!line.contains("otpmint listening"), "{line}");
        if line.contains("PostgreSQL is not up yet") {
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["level"], "WARN", "{line}");
            assert!(v["left_seconds"].as_u64().unwrap() <= 120, "{line}");
            assert!(v["error"].as_str().unwrap().contains("refused"), "{line}");
            warned.push(line);
        }
    }
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "it still waits"
    );
    // The server comes up where it was told to look: otpmint starts and serves.
    let _db = otpmint::testkit::proxy::Proxy::start_on(port, "127.0.0.1:5432".into()).await;
    running.listening().unwrap();
    let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", running.port))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(running);

    // A database that does not exist is the server's refusal, not "not up yet": no wait.
    let name = pg.rsplit('/').next().unwrap().split('?').next().unwrap();
    let missing = crate::helpers::pg_url_for(&pg, &format!("{name}_missing"));
    let mut cmd = crate::binary::otpmint(dir.path());
    with(&mut cmd, &missing);
    let out = cmd.arg("serve").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("not up yet"), "{err}");
    assert!(err.contains("does not exist"), "{err}");
}

/// A database closed to connections for a while (`ALLOW_CONNECTIONS false`, a maintenance
/// window) is waited for like a server not up yet, and `serve` starts once it opens (found
/// by the outage audit: it exited 1 at once, and a supervisor's restart during the outage
/// did not take).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_waits_for_a_database_closed_to_connections_for_a_while() {
    let base = crate::helpers::postgres_base_url().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pg = crate::helpers::fresh_pg_database(&base);
    let name = pg
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let allow = move |yes: bool| {
        let (base, name) = (base.clone(), name.clone());
        crate::helpers::pg_blocking(move || {
            let mut c = postgres::Client::connect(&base, postgres::NoTls).unwrap();
            c.batch_execute(&format!(
                "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {yes}"
            ))
            .unwrap();
        })
    };
    allow(false);
    let mut cmd = crate::binary::otpmint(dir.path());
    cmd.env("OTPMINT__DATABASE__URL", &pg)
        .env(
            "OTPMINT__CRYPTO__MASTER_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .env("OTPMINT__SERVER__BIND", "127.0.0.1:0")
        .env("OTPMINT__DATABASE__START_WAIT_SECONDS", "120")
        .arg("serve");
    let mut running = crate::binary::spawn(cmd);
    let waited = loop {
        let Ok(line) = running.lines.recv_timeout(Duration::from_secs(60)) else {
            break None;
        };
        if line.contains("PostgreSQL is not up yet") {
            break Some(line);
        }
    };
    let still_running = running.child.try_wait().unwrap().is_none();
    allow(true);
    let line = waited.expect("no warning that it waits");
    assert!(
        line.contains("not currently accepting connections"),
        "{line}"
    );
    assert!(still_running, "it still waits");
    running.listening().unwrap();
    let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", running.port))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// `config check` on PostgreSQL makes the checks `serve` makes before it binds (API.md
/// §18.8; found by a black-box audit, which saw "configuration ok" and then `serve` fail):
/// the server answers, the database exists, the master key opens its keyring — naming the
/// database; an empty database passes (`serve` installs it) and nothing is written to it.
#[test]
fn config_check_on_postgresql_refuses_what_serve_would() {
    let base = crate::helpers::postgres_base_url().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pg = crate::helpers::fresh_pg_database(&base);
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let other = "9NQ6HO6F1PqzdxHgaNrxucUxPACCwfEt/THEBkzx3ok=";
    let run = |args: &[&str], url: &str, key: &str| {
        let out = crate::binary::otpmint(dir.path())
            .args(args)
            .env("OTPMINT__DATABASE__URL", url)
            .env("OTPMINT__CRYPTO__MASTER_KEY", key)
            .env("OTPMINT__CRYPTO__MASTER_KEY_FILE", "")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let check = |url: &str, key: &str| run(&["config", "check"], url, key);
    let (ok, err) = check(&pg, key);
    assert!(ok, "an empty database: {err}");
    assert!(err.contains("database: postgresql"), "{err}");
    let tables = |url: &str| {
        let url = url.to_string();
        crate::helpers::pg_blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let n: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
                    &[],
                )
                .unwrap()
                .get(0);
            n
        })
    };
    assert_eq!(tables(&pg), 0, "config check wrote to the database");
    let (ok, err) = run(&["migrate"], &pg, key);
    assert!(ok, "{err}");
    let (ok, err) = check(&pg, key);
    assert!(ok, "{err}");
    let (ok, err) = check(&pg, other);
    assert!(!ok && err.contains("does not match"), "{err}");
    assert!(err.contains("(database: postgresql"), "{err}");
    assert!(!err.contains(other), "{err}");
    // A schema older than this binary's (`serve` migrates it at its start) is read as it
    // stands: the keyring still has to open, and nothing is migrated.
    let applied = |url: &str, sql: &'static str| {
        let url = url.to_string();
        crate::helpers::pg_blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.batch_execute(sql).unwrap();
            let n: i64 = c
                .query_one("SELECT COUNT(*) FROM otpmint_schema_history", &[])
                .unwrap()
                .get(0);
            n
        })
    };
    let migrations = applied(
        &pg,
        "DELETE FROM otpmint_schema_history WHERE version = (SELECT MAX(version) FROM otpmint_schema_history)",
    );
    let (ok, err) = check(&pg, key);
    assert!(ok, "{err}");
    let (ok, err) = check(&pg, other);
    assert!(!ok && err.contains("does not match"), "{err}");
    assert_eq!(
        applied(&pg, "SELECT 1"),
        migrations,
        "config check migrated"
    );
    let name = pg.rsplit('/').next().unwrap().split('?').next().unwrap();
    let missing = crate::helpers::pg_url_for(&pg, &format!("{name}_missing"));
    let (ok, err) = check(&missing, key);
    assert!(!ok && err.contains("does not exist"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (ok, err) = check(&at_port(&pg, port), key);
    assert!(!ok && err.contains("refused"), "{err}");
}

/// Run `cmd` to its end, killed (and the test failed) if it is still running after `most`:
/// a start that never gives up would otherwise hang the suite.
fn ended_within(mut cmd: Command, most: Duration) -> (Option<i32>, String) {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut all);
        all
    });
    let deadline = std::time::Instant::now() + most;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {most:?}: {}", reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status.code(), reader.join().unwrap())
}

/// The wait ends: a server that stays down is given up on after `database.start_wait_seconds`
/// with the last reason; and a server that takes the connection but never answers (a proxy
/// whose database is not there) is not waited on for ever — each try ends after
/// `database.timeout_seconds`.
#[test]
fn the_start_wait_gives_up_and_bounds_a_server_that_never_answers() {
    let base = crate::helpers::postgres_base_url().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |url: &str| {
        let mut cmd = crate::binary::otpmint(dir.path());
        cmd.arg("serve")
            .env("OTPMINT__DATABASE__URL", url)
            .env("OTPMINT__SERVER__BIND", "127.0.0.1:0")
            .env("OTPMINT__DATABASE__TIMEOUT_SECONDS", "1")
            .env("OTPMINT__DATABASE__START_WAIT_SECONDS", "2");
        ended_within(cmd, Duration::from_secs(60))
    };
    let name = "otpmint_never_there";
    // Down all along: refused at every try, then given up on, exit 1 with the reason.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = at_port(&crate::helpers::pg_url_for(&base, name), port);
    let (code, err) = run(&down);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("PostgreSQL is not up yet"), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: database") && last.contains("Connection refused"),
        "{err}"
    );
    // A listener that never accepts: the kernel completes the handshake, nothing answers.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = mute.local_addr().unwrap().port();
    let mute_url = at_port(&crate::helpers::pg_url_for(&base, name), port);
    let (code, err) = run(&mute_url);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("PostgreSQL is not up yet"), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("did not answer within 1 s"), "{err}");
    drop(mute);
    // A listener that accepts and closes at once (a proxy whose database is not there yet).
    let closing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closing.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in closing.incoming() {
            drop(conn);
        }
    });
    // Without TLS asked first, so the close meets the start-up message itself.
    let url = at_port(&crate::helpers::pg_url_for(&base, name), port);
    let url = format!(
        "{url}{}sslmode=disable",
        if url.contains('?') { '&' } else { '?' }
    );
    let (code, err) = run(&url);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("PostgreSQL is not up yet"), "waited: {err}");
}

/// `url` pointing at `port` of loopback instead of the test server's 127.0.0.1:5432.
fn at_port(url: &str, port: u16) -> String {
    assert!(
        url.contains("127.0.0.1:5432"),
        "the test's database URL names 127.0.0.1:5432"
    );
    url.replacen("127.0.0.1:5432", &format!("127.0.0.1:{port}"), 1)
}

/// Run `cmd` (its database not there) with a long pool timeout and check it failed at once,
/// well within that timeout, with exit 1 and without waiting; its stderr.
fn fails_at_once(mut cmd: Command) -> String {
    cmd.env("OTPMINT__DATABASE__TIMEOUT_SECONDS", "60");
    let began = std::time::Instant::now();
    let out = cmd.output().unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "{:?}",
        began.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("not up yet"), "{err}");
    err
}

/// A rolling upgrade (docs/operations.md): a migration broken by a deadlock with another
/// session — an instance of the earlier version still serving — is run again, not left
/// failed with "`error applying update`, `db error`" (found by the upgrade audit); one that
/// fails for another reason names itself and the database's own words.
#[test]
fn a_migration_a_deadlock_breaks_is_run_again_and_a_failing_one_names_itself() {
    let base = crate::helpers::postgres_base_url().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pg = crate::helpers::fresh_pg_database(&base);
    let migrate = || {
        let mut cmd = crate::binary::otpmint(dir.path());
        cmd.env("OTPMINT__DATABASE__URL", &pg)
            .env(
                "OTPMINT__CRYPTO__MASTER_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )
            .arg("migrate")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let said = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = migrate().output().unwrap();
    assert!(out.status.success(), "{}", said(&out));
    // A database from before V22.
    assert!(crate::lifecycle::before_migration(&pg, 22) >= 1);
    let mut old = postgres::Client::connect(&pg, postgres::NoTls).unwrap();
    // The earlier version's session: it holds the history table (as its writes would hold
    // rows the migration needs), then reads the table the migration alters. It waits longer
    // than the migration's session before it looks for a deadlock, so the migration's is
    // the one broken.
    old.batch_execute(
        "SET deadlock_timeout = '30s'; BEGIN; LOCK TABLE otpmint_schema_history IN SHARE MODE",
    )
    .unwrap();
    let running = migrate().spawn().unwrap();
    let mut watch = postgres::Client::connect(&pg, postgres::NoTls).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: i64 = watch
            .query_one(
                "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE NOT l.granted AND c.relname = 'otpmint_schema_history'",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the migration never waited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each now waits for the other: PostgreSQL breaks the migration's transaction.
    old.batch_execute("SELECT 1 FROM challenges LIMIT 1; COMMIT")
        .unwrap();
    let out = running.wait_with_output().unwrap();
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("running it again"), "{text}");
    let applied: i64 = watch
        .query_one(
            "SELECT MAX(version)::BIGINT FROM otpmint_schema_history",
            &[],
        )
        .unwrap()
        .get(0);
    let newest = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert_eq!(applied, newest as i64);
    watch
        .batch_execute("SELECT attempts_open FROM challenges LIMIT 1")
        .unwrap();
    // A migration that fails for another reason: named, with the database's words.
    watch
        .batch_execute("DELETE FROM otpmint_schema_history WHERE version >= 22")
        .unwrap();
    let out = migrate().output().unwrap();
    let text = said(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        // The pending ones from V22 on: "migrations V22__attempts_open to V… (none
        // applied) failed".
        text.contains("migrations V22__attempts_open to V")
            && text.contains("(none applied) failed")
            && text.contains("already exists (42701)"),
        "{text}"
    );
}

/// A SIGHUP whose file names another PostgreSQL database checks that database as `config
/// check` and the next start would (found by the configuration audit: the running
/// database's keyring was checked instead, so a database that does not exist passed the
/// reload and broke the next start, and a move to another installation with its own master
/// key was refused). The running instance keeps its database until the restart.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_naming_another_postgresql_database_checks_that_one() {
    let base = crate::helpers::postgres_base_url().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running_db = crate::helpers::fresh_pg_database(&base);
    let other_db = crate::helpers::fresh_pg_database(&base);
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let other_key = "9NQ6HO6F1PqzdxHgaNrxucUxPACCwfEt/THEBkzx3ok=";
    // The other installation, under its own master key.
    let made = crate::binary::otpmint(dir.path())
        .arg("migrate")
        .env("OTPMINT__DATABASE__URL", &other_db)
        .env("OTPMINT__CRYPTO__MASTER_KEY", other_key)
        .env("OTPMINT__CRYPTO__MASTER_KEY_FILE", "")
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");

    let conf = dir.path().join("otpmint.toml");
    let write = |url: &str, key: &str| {
        std::fs::write(
            &conf,
            format!(
                "[server]\nbind = \"127.0.0.1:0\"\n[database]\nurl = \"{url}\"\n[crypto]\nmaster_key = \"{key}\"\nmaster_key_file = \"\"\n"
            ),
        )
        .unwrap();
    };
    write(&running_db, key);
    let mut cmd = crate::binary::otpmint(dir.path());
    cmd.arg("--config").arg(&conf).arg("serve");
    let running = crate::binary::serve(cmd).unwrap();
    let reload = || running.reload();

    // A database that does not exist: refused, named.
    let name = running_db
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    let missing = crate::helpers::pg_url_for(&running_db, &format!("{name}_missing"));
    write(&missing, key);
    let line = reload();
    assert!(
        line.contains("reload failed") && line.contains("does not exist"),
        "{line}"
    );
    // The other installation with this instance's key: its keyring does not open.
    write(&other_db, key);
    let line = reload();
    assert!(
        line.contains("reload failed") && line.contains("keyring"),
        "{line}"
    );
    // The other installation with its own key: a file the next start takes, so the reload
    // passes and says both wait for the restart.
    write(&other_db, other_key);
    let line = reload();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert!(!line.contains("reload failed"), "{line}");
    let restart = v["need_restart"].as_str().unwrap();
    assert!(
        restart.contains("database.url") && restart.contains("crypto.master_key"),
        "{line}"
    );
    assert!(!line.contains(other_key) && !line.contains(key), "{line}");
    // Meanwhile the instance still serves from its own database, under its own key.
    let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", running.port))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let check = crate::binary::otpmint(dir.path())
        .arg("--config")
        .arg(&conf)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}
