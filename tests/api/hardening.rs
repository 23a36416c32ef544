//! Hardening found by an attack (API.md §6 items 21-24): a hostile relay cannot grow memory,
//! a stalled client is cut off, every X-Forwarded-For line counts, and a database that
//! cannot be written answers 503.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::smtp::Mode;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_relay_flooding_one_endless_line_fails_the_delivery_without_growing_memory() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.smtp.set_mode(Mode::Flood);
    let before = rss_kib();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..100 {
            peak = peak.max(rss_kib());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    });
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "smtp_rejected");
    let peak = sampler.await.unwrap();
    // Other tests run in this process too: allow them room, but not a flood's worth.
    assert!(
        peak.saturating_sub(before) < 100 * 1024,
        "RSS grew from {before} KiB to {peak} KiB"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let flooded = app.smtp.flooded_bytes();
    assert!(
        flooded < 32 << 20,
        "the relay could write {flooded} bytes before we hung up"
    );
}

/// The bounds hold inside TLS, as SMTP text: after STARTTLS, a 5 KiB reply line or an
/// 80 KiB reply fails the delivery as `smtp_rejected` (API.md §6.22) — not as a TLS error,
/// and not let through because TLS records were counted instead of reply lines.
#[tokio::test]
async fn an_oversized_reply_under_starttls_fails_as_smtp_rejected() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    for mode in [Mode::LongLineUnderTls, Mode::LongReplyUnderTls] {
        app.smtp.set_mode(mode);
        let r = app
            .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "{mode:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["reason"], "smtp_rejected", "{mode:?}: {v}");
    }
    assert!(app.smtp.messages().is_empty());
    // The same relay, answering as relays do: the code goes out.
    app.smtp.set_mode(Mode::Normal);
    app.mint(&sk, "ada@example.com").await;
}

/// Reply lines within the bound (API.md §6.22 fails only a line over 4 KiB) — longer than the
/// 1 000 bytes lettre reads, one of them ending in two-byte characters at exactly 4 096 bytes
/// — are read (cut short where a character starts), and the code goes out: before, any line
/// over 999 characters failed the delivery as `smtp_rejected`.
#[tokio::test]
async fn reply_lines_up_to_four_kib_are_read_and_the_code_goes_out() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.smtp.set_mode(Mode::LongLinesWithinBound);
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.smtp.count_to("ada@example.com"), 1);
    let (status, v) = app.verify(&sk, &key, &code).await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

/// A reply over the bounds at RCPT — 200 lines of 1 000 characters, 200 KB — is refused as such
/// (API.md §6.22: `smtp_rejected`), not taken for a relay that could not be reached: a sync
/// mint answers 502 `smtp_rejected`, and a queued message fails at once rather than going
/// back to the flooding relay until its code expires.
#[tokio::test]
async fn an_oversized_reply_at_rcpt_fails_as_smtp_rejected_and_is_not_retried() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    app.smtp.set_mode(Mode::LongLinesAtRcpt);
    let r = app
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "smtp_rejected", "{v}");
    let key = crate::outbox::mint_async(&app, &sk, "bob@example.com").await;
    let st = crate::outbox::wait_status(&app, &sk, &key, |v| {
        !matches!(v["delivery"]["status"].as_str(), Some("queued" | "sending"))
    })
    .await;
    assert_eq!(
        (&st["delivery"]["status"], &st["delivery"]["reason"]),
        (&json!("failed"), &json!("smtp_rejected")),
        "{st}"
    );
    assert_eq!(st["delivery"]["attempts"], 1, "{st}");
    assert!(app.smtp.messages().is_empty());
}

/// Read until the server answers or closes; the bytes read (empty when it just closed).
async fn answer_or_close(s: &mut TcpStream, within: Duration) -> Result<String, &'static str> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(n)) => Ok(String::from_utf8_lossy(&buf[..n]).to_string()),
        Ok(Err(_)) => Ok(String::new()),
        Err(_) => Err("the server still holds the stalled connection"),
    }
}

#[tokio::test]
async fn a_client_that_stalls_its_body_or_headers_is_cut_off() {
    let app = spawn_app_with(|s| s.server.request_timeout_seconds = 1).await;
    let (_, sk) = app.tenant().await;
    let port = app.addr.rsplit(':').next().unwrap().to_string();
    // A body promised at 16 000 bytes, one byte sent.
    let mut s = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    s.write_all(
        format!(
            "POST /v1/otp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {sk}\r\nContent-Length: 16000\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let got = answer_or_close(&mut s, Duration::from_secs(6))
        .await
        .unwrap();
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 408"),
        "unexpected answer {got}"
    );
    // The verify route checks the key with the attempt: a stalled body is 408 whoever sent
    // it, not a 401 for a key it did not look up yet.
    let mut s = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    s.write_all(
        stalled_verify("Authorization: Bearer sk_unknownunknownunknownunknown12\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let got = answer_or_close(&mut s, Duration::from_secs(6))
        .await
        .unwrap();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    // Headers that never end.
    let mut s = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    s.write_all(b"POST /v1/otp HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let got = answer_or_close(&mut s, Duration::from_secs(6))
        .await
        .unwrap();
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 408"),
        "unexpected answer {got}"
    );
    // The server still serves.
    assert_eq!(app.get("/healthz", "").await.status(), StatusCode::OK);
}

/// A chunked body that stalls, runs past the limit, or is answered without being read
/// (404, 401) is answered and its connection ends with the answer, and one read whole keeps
/// it for the next request (found by black-box
/// audits: actix kept such connections open after the answer, so stalled chunked bodies
/// held every connection the workers take, and a body answered 413 went on streaming).
#[tokio::test]
async fn a_chunked_body_that_stalls_or_runs_too_long_ends_its_connection_with_the_answer() {
    let app = spawn_app_with(|s| s.server.request_timeout_seconds = 1).await;
    let (_, sk) = app.tenant().await;
    let port = app.addr.rsplit(':').next().unwrap().to_string();
    let head = |path: &str, auth: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             {auth}Transfer-Encoding: chunked\r\n\r\n"
        )
    };
    let mint = head("/v1/otp", &format!("Authorization: Bearer {sk}\r\n"));
    let stalled = "1\r\n{\r\n".to_string();
    let chunk = format!("1000\r\n{}\r\n", "a".repeat(4096));
    for (head, body, status) in [
        (mint.clone(), stalled.clone(), "HTTP/1.1 408"),
        (mint, chunk.repeat(5), "HTTP/1.1 413"),
        // Answered without the body being read: no such route, no key.
        (head("/nowhere", ""), stalled.clone(), "HTTP/1.1 404"),
        (head("/v1/otp/verify", ""), stalled, "HTTP/1.1 401"),
    ] {
        let mut s = TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        // The server may answer before it has read all of a body too large.
        let _ = s.write_all(body.as_bytes()).await;
        let mut got = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(6), async {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        let got = String::from_utf8_lossy(&got).to_string();
        assert!(got.starts_with(status), "{status}: {got}");
        assert!(
            got.to_ascii_lowercase().contains("connection: close"),
            "{got}"
        );
        assert!(
            ended.is_ok(),
            "{status}: the connection stayed open after the answer"
        );
    }
    // A chunked body read whole keeps its connection for the next request.
    let mut s = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let body = r#"{"email":"ada@example.com"}"#;
    let whole = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let next = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(
        format!(
            "{}{whole}",
            head("/v1/otp", &format!("Authorization: Bearer {sk}\r\n"))
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("shareable_key") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the mint's answer")
            .unwrap();
        assert!(n > 0, "closed after a body read whole: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.starts_with("HTTP/1.1 201"), "{got}");
    s.write_all(next.as_bytes()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the next answer on the same connection")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// A verify whose body is promised but never sent.
fn stalled_verify(auth: &str) -> String {
    format!(
        "POST /v1/otp/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: 100\r\n\r\n{{\"otp"
    )
}

/// A verify without a key is 401 at once: nothing to look up, no body to wait for (before,
/// it waited out the request's time for the body, then answered 401).
#[tokio::test]
async fn a_verify_without_a_key_is_refused_without_waiting_for_its_body() {
    let app = spawn_app_with(|s| s.server.request_timeout_seconds = 30).await;
    let port = app.addr.rsplit(':').next().unwrap().to_string();
    let mut s = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    s.write_all(stalled_verify("").as_bytes()).await.unwrap();
    let got = answer_or_close(&mut s, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(got.starts_with("HTTP/1.1 401"), "{got}");
}

#[tokio::test]
async fn open_connections_per_worker_are_bounded() {
    let app = spawn_app_with(|s| {
        s.server.workers = 1;
        s.server.max_connections_per_worker = 2;
        s.server.request_timeout_seconds = 3;
    })
    .await;
    let port = app.addr.rsplit(':').next().unwrap().to_string();
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(
            TcpStream::connect(format!("127.0.0.1:{port}"))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Both slots are held: a third client waits in the backlog.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(1000))
        .build()
        .unwrap();
    assert!(
        client
            .get(format!("{}/healthz", app.addr))
            .send()
            .await
            .is_err(),
        "a connection beyond the bound was served"
    );
    // The idle ones are cut off after the request timeout; then service resumes.
    for s in &mut idle {
        answer_or_close(s, Duration::from_secs(8)).await.unwrap();
    }
    drop(idle);
    let r = reqwest::Client::new()
        .get(format!("{}/healthz", app.addr))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_forwarded_for_line_counts_for_the_client_ip() {
    let app = spawn_app_with(|s| s.server.trusted_proxies = vec!["127.0.0.1".into()]).await;
    let (_, sk) = app.tenant().await;
    // The client forged the first line; the trusted proxy appended its own.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.append("x-forwarded-for", "6.6.6.6".parse().unwrap());
    headers.append("x-forwarded-for", "198.51.100.7".parse().unwrap());
    let r = app
        .client
        .post(format!("{}/v1/otp", app.addr))
        .bearer_auth(&sk)
        .headers(headers)
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = app.get("/v1/tenant/audit", &sk).await.json().await.unwrap();
    let mint = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "mint")
        .unwrap()
        .clone();
    assert_eq!(mint["client_ip"], "198.51.100.7", "{mint}");
}

#[tokio::test]
async fn a_database_held_locked_answers_503_and_readyz_follows() {
    if skip_on_postgres(
        "holds SQLite's write lock (the PostgreSQL run cuts the server away instead)",
    ) {
        return;
    }
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let lock = HeldLock::sqlite_write(&app.db_path());
    let verify_body = json!({"shareable_key": key, "otp": code});
    let (ready, mint, verify, stranger) = tokio::join!(
        app.get("/readyz", ""),
        app.post("/v1/otp", &sk, json!({"email": "bob@example.com"})),
        app.post("/v1/otp/verify", &sk, verify_body.clone()),
        app.post(
            "/v1/otp/verify",
            "sk_unknownunknownunknownunknown12",
            verify_body.clone()
        )
    );
    // A verify cannot reserve its attempt: 503, and the code still verifies afterwards (below).
    // A wrong secret key is still told apart from a store that cannot answer.
    assert_eq!(verify.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stranger.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(mint.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(mint.headers().contains_key("retry-after"));
    let v: Value = mint.json().await.unwrap();
    assert_eq!(v["code"], "unavailable");
    // Nothing was sent for the refused mint.
    assert_eq!(app.smtp.count_to("bob@example.com"), 0);
    lock.release();
    assert_eq!(app.get("/readyz", "").await.status(), StatusCode::OK);
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    app.mint(&sk, "bob@example.com").await;
}

/// A small filesystem of its own (tmpfs), unmounted when dropped; `None` where this process
/// may not mount one (not root, or in a container that forbids it).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={megabytes}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(SmallDisk { dir })
    }

    /// Fill it up: a file written until the disk refuses more.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).and_then(|()| f.flush()).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a file the server held open must not keep it mounted.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .output();
    }
}

/// API.md §6.24: a full disk makes the instance not ready at once, with no write of its own
/// meeting it (the probe's write takes no space, so the disk is looked at), for as long as
/// it lasts, and ready again as soon as space is back; codes stored before still verify.
#[tokio::test]
async fn a_full_disk_makes_the_instance_not_ready_until_space_is_back() {
    if skip_on_postgres("fills the disk of SQLite's file (PostgreSQL's disk is its server's)") {
        return;
    }
    let Some(disk) = SmallDisk::mount(16) else {
        eprintln!(
            "\n*** FULL-DISK TEST SKIPPED: this process cannot mount a tmpfs (it needs root, outside a container that forbids mounts) ***\n"
        );
        return;
    };
    let db = disk.dir.path().join("otpmint.db");
    let app = spawn_app_with(|s| s.database.url = format!("sqlite://{}", db.display())).await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.get("/readyz", "").await.status(), StatusCode::OK);

    let filler = disk.fill();
    for _ in 0..3 {
        let r = app.get("/readyz", "").await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "unavailable");
    }

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(app.get("/readyz", "").await.status(), StatusCode::OK);
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    app.mint(&sk, "bob@example.com").await;
    drop(app);
}

#[tokio::test]
async fn invented_http_methods_add_no_metric_series() {
    let app = spawn_app().await;
    for i in 0..30 {
        let method = reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        let r = app
            .client
            .request(method, format!("{}/v1/otp", app.addr))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let text = app.get("/metrics", "").await.text().await.unwrap();
    assert!(
        !text.contains("INVENTED"),
        "a client's method became a label"
    );
    assert!(text.contains("method=\"other\""), "{text}");
}

#[tokio::test]
async fn concurrent_patches_of_one_tenant_never_lose_each_others_fields() {
    let app = spawn_app().await;
    let (id, _) = app.tenant().await;
    let path = format!("/v1/tenants/{id}");
    for round in 0..20u32 {
        let (delivery, locale) = if round % 2 == 0 {
            ("async", "de")
        } else {
            ("sync", "fr")
        };
        let bodies = [
            json!({"name": format!("Acme {round}")}),
            json!({"smtp": {"max_connections": 1 + round % 7}}),
            json!({"smtp": {"from": format!("Acme <r{round}@acme.example>")}}),
            json!({"policy": {"ttl_seconds": 100 + round}}),
            json!({"delivery": delivery}),
            json!({"default_locale": locale}),
        ];
        let answers = futures_util::future::join_all(
            bodies.iter().map(|b| app.patch(&path, ADMIN, b.clone())),
        )
        .await;
        for r in answers {
            assert_eq!(r.status(), StatusCode::OK);
        }
        let v: Value = app.get(&path, ADMIN).await.json().await.unwrap();
        assert_eq!(v["name"], format!("Acme {round}"), "round {round}: {v}");
        assert_eq!(
            v["smtp"]["max_connections"],
            1 + round % 7,
            "round {round}: {v}"
        );
        assert_eq!(
            v["smtp"]["from"],
            format!("Acme <r{round}@acme.example>"),
            "round {round}: {v}"
        );
        assert_eq!(
            v["policy"]["ttl_seconds"],
            100 + round,
            "round {round}: {v}"
        );
        assert_eq!(v["delivery"], delivery, "round {round}: {v}");
        assert_eq!(v["default_locale"], locale, "round {round}: {v}");
    }
    // Many at once on one tenant still all apply: a change that lost a race is made again
    // after a short random pause, so they fall out of step (409 only if it never got a turn).
    let answers = futures_util::future::join_all((0..32u32).map(|i| {
        let body = match i % 4 {
            0 => json!({"name": format!("Acme many {i}")}),
            1 => json!({"policy": {"ttl_seconds": 200 + i}}),
            2 => json!({"smtp": {"max_connections": 1 + i % 7}}),
            _ => json!({"default_locale": if i % 8 == 3 { "de" } else { "fr" }}),
        };
        app.patch(&path, ADMIN, body)
    }))
    .await;
    let statuses: Vec<StatusCode> = answers.iter().map(|r| r.status()).collect();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // The password survived every change: a code still goes out.
    let sk = app
        .post(&format!("{path}/rotate-secret"), ADMIN, json!({}))
        .await
        .json::<Value>()
        .await
        .unwrap()["secret_key"]
        .as_str()
        .unwrap()
        .to_string();
    app.patch(&path, ADMIN, json!({"delivery": "sync"})).await;
    app.mint(&sk, "ada@example.com").await;
}

#[tokio::test]
async fn a_lease_that_ran_out_no_longer_shows_its_message_as_sending() {
    if skip_on_postgres("leases run on the database's clock there, not the test's") {
        return;
    }
    let app = spawn_app().await;
    app.smtp.set_mode(crate::smtp::Mode::Tarpit);
    let (_, sk) = app.tenant().await;
    let r = app
        .post(
            "/v1/otp",
            &sk,
            json!({"email": "ada@example.com", "delivery": "async"}),
        )
        .await;
    let key = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    let status = || async {
        let v = app.code_status(&sk, &key).await;
        v["delivery"]["status"].as_str().unwrap().to_string()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while status().await != "sending" {
        assert!(std::time::Instant::now() < deadline, "never sending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its sender is still stuck in the tarpit, but its lease has run out: nobody holds it.
    app.clock.advance_secs(120);
    assert_eq!(status().await, "queued");
}

#[tokio::test]
async fn a_tenant_stores_at_most_its_limit_of_templates() {
    let app = spawn_app_with(|s| s.templates.max_locales_per_tenant = 3).await;
    let (_, sk) = app.tenant().await;
    let put = |locale: &'static str| {
        let (app, sk) = (&app, sk.clone());
        async move {
            let t = json!({"subject": "Code", "text": "Your code: {{ code }}"});
            app.put(&format!("/v1/tenant/templates/{locale}"), &sk, t)
                .await
        }
    };
    for l in ["en", "de", "fr"] {
        assert_eq!(put(l).await.status(), StatusCode::OK, "{l}");
    }
    let r = put("it").await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "template_limit_reached", "{v}");
    // Replacing one is not one more; after a delete there is room again.
    assert_eq!(put("de").await.status(), StatusCode::OK);
    assert_eq!(
        app.delete("/v1/tenant/templates/fr", &sk).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(put("it").await.status(), StatusCode::OK);
    let v: Value = app
        .get("/v1/tenant/templates", &sk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["templates"].as_array().unwrap().len(), 3, "{v}");
}

#[tokio::test]
async fn a_template_that_hides_the_code_from_some_recipient_gives_way_to_the_built_in_one() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    // The lint renders for one sample recipient: this template passes it.
    let t = json!({"subject": "Sign in", "text":
        "{% if email == \"victim@example.com\" %}All is well, nothing to do.{% else %}Your code: {{ code }}{% endif %}"});
    let r = app.put("/v1/tenant/templates/en", &sk, t).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The victim gets the built-in message, with the code, and it verifies.
    let (key, code) = app.mint(&sk, "victim@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let msg = app.smtp.wait_for("victim@example.com", 1).await;
    assert!(!msg.text().unwrap().contains("All is well"));
    // Others get the tenant's own.
    app.mint(&sk, "ada@example.com").await;
    let msg = app.smtp.wait_for("ada@example.com", 1).await;
    assert!(
        msg.text().unwrap().starts_with("Your code: "),
        "{:?}",
        msg.text()
    );
    // The fallback is in the tenant's audit.
    let v: Value = app.get("/v1/tenant/audit", &sk).await.json().await.unwrap();
    let events = v["events"].as_array().unwrap();
    let fallbacks: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "template.fallback")
        .collect();
    assert_eq!(fallbacks.len(), 1, "{v}");
    assert_eq!(fallbacks[0]["recipient"], "v***@example.com");
}

/// The same for a subject that breaks its line, and HTML that shows the code only in a
/// comment, for one recipient (API.md §6.29, §8; found by a black-box audit: the subject
/// went out with its break made a space, the HTML with no code a reader sees).
#[tokio::test]
async fn a_subject_breaking_its_line_or_html_hiding_the_code_for_some_recipient_gives_way_too() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let t = json!({
        "subject": "Code {% if email == \"eve@example.com\" %}{{ '\\r\\nBcc: evil@example.com' }}{% endif %}",
        "text": "Your code: {{ code }}",
        "html": "{% if email == \"mallory@example.com\" %}<!-- {{ code }} --><p>Hi</p>{% else %}<p>{{ code }}</p>{% endif %}"
    });
    let r = app.put("/v1/tenant/templates/en", &sk, t).await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    for to in ["eve@example.com", "mallory@example.com"] {
        let (key, code) = app.mint(&sk, to).await;
        let msg = app.smtp.wait_for(to, 1).await;
        let (subject, html) = (msg.subject().unwrap(), msg.html().unwrap());
        assert!(
            !subject.contains("Bcc") && !subject.starts_with("Code"),
            "{subject}"
        );
        assert!(html.contains(&code) && !html.contains("<!--"), "{html}");
        assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    }
    // Others get the tenant's own.
    app.mint(&sk, "ada@example.com").await;
    let msg = app.smtp.wait_for("ada@example.com", 1).await;
    assert_eq!(msg.subject().unwrap(), "Code");
    let v: Value = app.get("/v1/tenant/audit", &sk).await.json().await.unwrap();
    let fallbacks = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "template.fallback")
        .count();
    assert_eq!(fallbacks, 2, "{v}");
}

/// An ext4 file system of its own on a loop device, mounted `errors=remount-ro`, detached
/// when dropped; `None` where this process cannot make one (not root, no loop devices, no
/// mkfs.ext4, or a kernel without ext4's error trigger).
struct FailingDisk {
    dir: tempfile::TempDir,
    device: String,
}

impl FailingDisk {
    fn mount() -> Option<FailingDisk> {
        let run = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let dir = tempfile::tempdir().ok()?;
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image).ok()?.set_len(32 << 20).ok()?;
        run("mkfs.ext4", &["-q", "-F", image.to_str()?])?;
        let device = run("losetup", &["-f", "--show", image.to_str()?])?;
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).ok()?;
        let disk = FailingDisk { dir, device };
        run(
            "mount",
            &["-o", "errors=remount-ro", &disk.device, mnt.to_str()?],
        )?;
        disk.trigger().exists().then_some(disk)
    }

    fn mnt(&self) -> std::path::PathBuf {
        self.dir.path().join("mnt")
    }

    fn trigger(&self) -> std::path::PathBuf {
        let name = self.device.trim_start_matches("/dev/");
        std::path::PathBuf::from(format!("/sys/fs/ext4/{name}/trigger_fs_error"))
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.mnt())
            .output();
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.device])
            .output();
    }
}

/// A file system that fails every write after an error while it still shows as writable
/// (ext4's `errors=remount-ro`: its emergency read-only state) makes an idle instance not
/// ready within seconds — the probe writes a page when nothing was written for 5 s — and a
/// mint there answers 503 (found by the filesystem audit: `/readyz` answered 200, and the
/// healthcheck exited 0, while every write failed).
#[tokio::test]
async fn a_disk_that_fails_every_write_makes_the_instance_not_ready() {
    if skip_on_postgres("fails the disk of SQLite's file (PostgreSQL's disk is its server's)") {
        return;
    }
    let Some(disk) = FailingDisk::mount() else {
        eprintln!(
            "\n*** FAILING-DISK TEST SKIPPED: this process cannot make an ext4 loop file system with an error trigger (it needs root, losetup, mkfs.ext4) ***\n"
        );
        return;
    };
    let db = disk.mnt().join("otpmint.db");
    let app = spawn_app_with(|s| s.database.url = format!("sqlite://{}", db.display())).await;
    let (_, sk) = app.tenant().await;
    app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.get("/readyz", "").await.status(), StatusCode::OK);
    std::fs::write(disk.trigger(), "1").unwrap();
    let mut ready = StatusCode::OK;
    for _ in 0..60 {
        ready = app.get("/readyz", "").await.status();
        if ready == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    let r = app
        .post("/v1/otp", &sk, json!({"email": "bob@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Not ready for as long as the writes fail: once nothing was written for the probe's
    // 5 s, every poll writes, and fails (whatever other stores of this test process write
    // meanwhile: what a write met lately is the process's, the writes taken are the store's).
    tokio::time::sleep(Duration::from_secs(6)).await;
    for _ in 0..3 {
        assert_eq!(
            app.get("/readyz", "").await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    drop(app);
}
