//! The connection to PostgreSQL over TLS (API.md §3, `sslmode`): `require` encrypts,
//! `verify-full` refuses a server it cannot verify and connects to one it can, through the
//! system's roots too.

use reqwest::StatusCode;

use crate::helpers::*;

/// The app's own connections to its database, as the server sees them: (count, all TLS).
fn own_connections_tls(url: &str) -> (i64, bool) {
    let (url, db) = (
        url.to_string(),
        url.rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_string(),
    );
    pg_blocking(move || {
        let base = url.split('?').next().unwrap().to_string();
        let mut c = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        let r = c
            .query_one(
                "SELECT COUNT(*), COALESCE(bool_and(s.ssl), false) FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid \
                 WHERE a.datname = $1 AND a.application_name = 'otpmint'",
                &[&db],
            )
            .unwrap();
        (r.get(0), r.get(1))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_encrypts_and_verify_full_refuses_an_unverifiable_server() {
    // The local server offers TLS with a certificate no public root signs, for its host
    // name rather than 127.0.0.1.
    let app = spawn_app_with(|s| s.database.url.push_str("?sslmode=require")).await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let (n, tls) = own_connections_tls(&app.settings.database.url);
    assert!(n >= 1 && tls, "{n} connections, all TLS: {tls}");

    let plain = spawn_app_with(|s| s.database.url.push_str("?sslmode=disable")).await;
    plain.tenant().await;
    let (n, tls) = own_connections_tls(&plain.settings.database.url);
    assert!(n >= 1 && !tls, "sslmode=disable uses plaintext");

    let mut settings = app.settings.clone();
    settings.database.url = settings
        .database
        .url
        .replace("sslmode=require", "sslmode=verify-full");
    settings.database.timeout_seconds = 1;
    let clock = app.clock.clone();
    let err = match otpmint::startup::Application::build_with_clock(settings, clock) {
        Ok(_) => panic!("verify-full accepted a certificate it cannot verify"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("database") && err.contains("TLS"), "{err}");
}

/// The local server's certificate, as the server names it (`ssl_cert_file`), if readable.
fn server_certificate(url: &str) -> Option<String> {
    let base = url.split('?').next().unwrap().to_string();
    let path: String = pg_blocking(move || {
        let mut c = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        c.query_one("SHOW ssl_cert_file", &[]).unwrap().get(0)
    });
    std::fs::read_to_string(&path).ok().map(|_| path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_verify_full_connects_when_the_servers_certificate_is_trusted() {
    // Trust the local server's own (self-signed, `localhost`) certificate through
    // database.tls_ca_file and name the server as its certificate does.
    let base = postgres_base_url().unwrap();
    let Some(cert) = server_certificate(&base) else {
        eprintln!("SKIPPED: the PostgreSQL server's certificate file is not readable here");
        return;
    };
    let app = spawn_app_with(move |s| {
        s.database.url =
            s.database.url.replace("@127.0.0.1:", "@localhost:") + "?sslmode=verify-full";
        s.database.tls_ca_file = cert;
    })
    .await;
    assert!(app.settings.database.url.contains("@localhost:"));
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let (n, tls) = own_connections_tls(&app.settings.database.url);
    assert!(n >= 1 && tls, "{n} connections, all TLS: {tls}");
}

/// `verify-full` trusts the system's roots as libpq does (API.md §7): with the server's
/// certificate in the system store (`SSL_CERT_FILE`) and no `database.tls_ca_file`, the
/// server starts on it; with a store that holds another CA only, or nothing, the same start
/// is refused.
#[test]
fn sslmode_verify_full_trusts_the_systems_roots() {
    let base = postgres_base_url().unwrap();
    let Some(cert) = server_certificate(&base) else {
        eprintln!("SKIPPED: the PostgreSQL server's certificate file is not readable here");
        return;
    };
    let url =
        fresh_pg_database(&base).replace("@127.0.0.1:", "@localhost:") + "?sslmode=verify-full";
    let dir = tempfile::tempdir().unwrap();
    let another_ca = dir.path().join("another-ca.pem");
    std::fs::write(&another_ca, otpmint::testkit::smtp::make_ca().ca_pem).unwrap();
    let start = |system_store: &std::path::Path| {
        let mut cmd = crate::binary::otpmint(dir.path());
        cmd.env("OTPMINT__SERVER__BIND", "127.0.0.1:0")
            .env("OTPMINT__DATABASE__URL", &url)
            .env("OTPMINT__DATABASE__TIMEOUT_SECONDS", "2")
            .env("SSL_CERT_FILE", system_store)
            .env_remove("SSL_CERT_DIR")
            .arg("serve");
        crate::binary::serve(cmd)
    };
    let refused = start(&another_ca)
        .err()
        .expect("an untrusted certificate was accepted");
    assert!(
        refused.contains("TLS") || refused.contains("certificate"),
        "{refused}"
    );
    // A store named by SSL_CERT_FILE that holds no certificate is an error, never widened
    // to the built-in roots.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let refused = start(&empty)
        .err()
        .expect("an empty trust store was widened");
    assert!(refused.contains("hold no usable certificate"), "{refused}");
    let running = start(std::path::Path::new(&cert)).expect("the system's roots are trusted");
    assert!(running.port > 0);
}
