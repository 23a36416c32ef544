//! Several instances on one PostgreSQL database (API.md §7), as processes: two keep every
//! invariant, statistics are exact, suppressions and links hold across them, a key is never
//! called exhausted while another compares, and a purge backlog is deleted whole.

use crate::helpers::*;
use crate::scale::*;
use crate::smtp::SmtpServer;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// Two `otpmint` processes on one fresh database with one master key; (processes, SMTP
/// server, the directory they run in).
async fn two_processes(
    extra: &str,
) -> (Vec<crate::binary::Running>, SmtpServer, tempfile::TempDir) {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path(), &smtp);
    let config = shared_config(dir.path(), &settings.database.url, &smtp, extra);
    let mut running = Vec::new();
    for _ in 0..2 {
        let mut cmd = crate::binary::otpmint(dir.path());
        cmd.arg("--config").arg(&config).arg("serve");
        running.push(crate::binary::serve(cmd).expect("the instance starts"));
    }
    (running, smtp, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_keep_every_invariant() {
    let (running, smtp, _dir) = two_processes(
        "[limits]\nrecipient_max_sends = 3\nresend_cooldown_seconds = 0\nrecipient_max_failures = 0\nper_ip_per_second = 10000\nper_ip_burst = 10000\n",
    )
    .await;
    let ports: Vec<u16> = running.iter().map(|r| r.port).collect();
    let url = |i: usize, path: &str| format!("http://127.0.0.1:{}{path}", ports[i % 2]);
    let client = reqwest::Client::new();
    let r = client
        .post(url(0, "/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(
            &json!({"name": "x", "smtp": {"host": "127.0.0.1", "port": smtp.port,
            "username": crate::smtp::SMTP_USER, "password": crate::smtp::SMTP_PASS,
            "from": "a@b.example", "tls": "starttls"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let t: Value = r.json().await.unwrap();
    let (id, sk) = (
        t["id"].as_str().unwrap().to_string(),
        t["secret_key"].as_str().unwrap().to_string(),
    );
    let mint = |i: usize, email: &'static str| {
        let (client, u, sk) = (client.clone(), url(i, "/v1/otp"), sk.clone());
        async move {
            client
                .post(u)
                .bearer_auth(&sk)
                .json(&json!({"email": email}))
                .send()
                .await
                .unwrap()
        }
    };
    let verify = |i: usize, key: String, otp: String| {
        let (client, u, sk) = (client.clone(), url(i, "/v1/otp/verify"), sk.clone());
        async move {
            client
                .post(u)
                .bearer_auth(&sk)
                .json(&json!({"shareable_key": key, "otp": otp}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    // 20 parallel correct verifies over both processes: one 200.
    let r = mint(0, "ada@example.com").await;
    let key = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    let code = smtp.wait_for("ada@example.com", 1).await.code();
    let tasks: Vec<_> = (0..20)
        .map(|i| tokio::spawn(verify(i, key.clone(), code.clone())))
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);

    // 50 parallel wrong guesses over both: exactly max_attempts (5) evaluated.
    let r = mint(1, "bob@example.com").await;
    let key = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    let code = smtp.wait_for("bob@example.com", 1).await.code();
    let tasks: Vec<_> = (0..50)
        .map(|i| tokio::spawn(verify(i, key.clone(), wrong(&code))))
        .collect();
    let mut evaluated = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::UNPROCESSABLE_ENTITY => evaluated += 1,
            StatusCode::GONE => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(evaluated, 5);
    assert_eq!(verify(0, key, code).await, StatusCode::GONE);

    // 30 parallel mints for one recipient over both, quota 3: three emails.
    let tasks: Vec<_> = (0..30)
        .map(|i| tokio::spawn(mint(i, "cy@example.com")))
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap().status() {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 3);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(smtp.count_to("cy@example.com"), 3);

    // Disabled on one process: refused by the other a second later.
    let r = client
        .patch(url(0, &format!("/v1/tenants/{id}")))
        .bearer_auth(ADMIN)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let r = client
        .get(url(1, "/v1/tenant"))
        .bearer_auth(&sk)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_are_exact_with_two_instances_minting_and_verifying_at_once() {
    let a = spawn_app().await;
    let b = instance_like(&a).await;
    let (_, sk) = a.tenant().await;
    // 40 async mints at once over both instances, then every code verified at once.
    let mints = (0..40).map(|i| {
        let (app, sk) = (if i % 2 == 0 { &a } else { &b }, sk.clone());
        async move {
            let r = app
                .post(
                    "/v1/otp",
                    &sk,
                    json!({"email": format!("u{i}@d{}.example", i % 3), "delivery": "async"}),
                )
                .await;
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            let v: Value = r.json().await.unwrap();
            (i, v["shareable_key"].as_str().unwrap().to_string())
        }
    });
    let keys = futures_util::future::join_all(mints).await;
    let mut codes = Vec::new();
    for (i, key) in &keys {
        let msg = a
            .smtp
            .wait_for(&format!("u{i}@d{}.example", i % 3), 1)
            .await;
        codes.push((key.clone(), msg.code()));
    }
    let verifies = codes.iter().enumerate().map(|(i, (key, code))| {
        let (app, sk) = (if i % 2 == 0 { &b } else { &a }, sk.clone());
        async move { verify_on(app, &sk, key, code).await.0 }
    });
    for s in futures_util::future::join_all(verifies).await {
        assert_eq!(s, StatusCode::OK);
    }
    // Every message's `sent` is recorded by whichever instance sent it, before the stats
    // are read; wait for the outboxes to settle.
    for _ in 0..100 {
        let v: Value = a
            .get("/v1/tenant/stats?granularity=hour", &sk)
            .await
            .json()
            .await
            .unwrap();
        let sum = |k: &str| -> i64 {
            v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r[k].as_i64().unwrap())
                .sum()
        };
        if sum("sent") == 40 {
            assert_eq!(
                (sum("minted"), sum("verified"), sum("failed")),
                (40, 40, 0),
                "{v}"
            );
            let by: Value = b
                .get("/v1/tenant/stats?group_by=domain", &sk)
                .await
                .json()
                .await
                .unwrap();
            let per: Vec<i64> = by["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["minted"].as_i64().unwrap())
                .collect();
            assert_eq!(per.iter().sum::<i64>(), 40, "{by}");
            assert_eq!(per.len(), 3, "{by}");
            // Two days on, the hourly pass folds each cell's shards into one row: the same
            // numbers, one row per cell; past stats.retention_days they are gone.
            let url = a.settings.database.url.clone();
            let rows = move |sql: &'static str| {
                let url = url.clone();
                pg_blocking(move || {
                    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    c.query_one(sql, &[]).unwrap().get::<_, i64>(0)
                })
            };
            assert!(
                rows("SELECT COUNT(*) FROM stats WHERE shard > 0") > 0,
                "spread over shards"
            );
            let day = otpmint::clock::rfc3339(otpmint::clock::Clock::now(a.clock.as_ref()));
            let day = &day[..10];
            a.clock.advance_secs(49 * 3600);
            a.services.admin.purge_stats().await.unwrap();
            assert_eq!(rows("SELECT COUNT(*) FROM stats WHERE shard > 0"), 0);
            assert_eq!(
                rows("SELECT COUNT(*) FROM (SELECT 1 FROM stats GROUP BY tenant_id, dim, hour, value HAVING COUNT(*) > 1) d"),
                0
            );
            let v: Value = a
                .get(&format!("/v1/tenant/stats?from={day}"), &sk)
                .await
                .json()
                .await
                .unwrap();
            let sum = |k: &str| -> i64 {
                v["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r[k].as_i64().unwrap())
                    .sum()
            };
            assert_eq!(
                (sum("minted"), sum("sent"), sum("verified")),
                (40, 40, 40),
                "{v}"
            );
            a.clock.advance_secs(401 * 86_400);
            a.services.admin.purge_stats().await.unwrap();
            assert_eq!(rows("SELECT COUNT(*) FROM stats"), 0, "past the retention");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sends were not all counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_refuses_a_recipient_suppressed_through_this_one() {
    let a = spawn_app().await;
    let b = instance_like(&a).await;
    let (_, sk) = a.tenant().await;
    b.post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(
        a.post(
            "/v1/tenant/suppressions",
            &sk,
            json!({"recipient": "ada@example.com"})
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    let r = b
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    let (s, v): (StatusCode, Value) = (r.status(), r.json().await.unwrap());
    assert_eq!(
        (s, v["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("recipient_suppressed")
        )
    );
    assert_eq!(
        b.delete("/v1/tenant/suppressions/ada@example.com", &sk)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        a.post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
            .await
            .status(),
        StatusCode::CREATED
    );
}

/// A suppression (API.md §16.1) made through one instance holds on the other at once, and
/// its removal too: the list and the count that lets a mint skip it are in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppression_made_on_one_instance_holds_on_the_other() {
    let a = spawn_app().await;
    let b = instance_like(&a).await;
    let (_, sk) = a.tenant().await;
    // b has read the tenant (an empty list) before the entry is made.
    let r = b
        .post("/v1/otp", &sk, json!({"email": "ada@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = a
        .post(
            "/v1/tenant/suppressions",
            &sk,
            json!({"recipient": "gone@example.com", "reason": "manual"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = b
        .post("/v1/otp", &sk, json!({"email": "gone@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "recipient_suppressed", "{v}");
    assert_eq!(a.smtp.count_to("gone@example.com"), 0);
    let r = b
        .delete("/v1/tenant/suppressions/gone@example.com", &sk)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    a.mint(&sk, "gone@example.com").await;
}

/// A magic link sealed by an instance that already saw a rotated data key opens on one
/// that has not loaded it yet: the keyring is reloaded (API.md §17.7, §11.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_sealed_under_a_newer_data_key_opens_on_an_instance_that_lags() {
    let a = spawn_app_with(|s| s.server.public_url = "http://localhost:8080/".into()).await;
    let (_, sk) = a.tenant().await;
    let r = a
        .patch(
            "/v1/tenant",
            &sk,
            json!({"allowed_return_urls": ["https://app.example.com"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (ok, _, err) = a.cli(&["keys", "rotate-data-key"]);
    assert!(ok, "{err}");
    // b starts now: its keyring has data key 2 active; a still seals and opens with 1.
    let b = instance_like(&a).await;
    let r = b
        .post(
            "/v1/otp",
            &sk,
            json!({"email": "ada@example.com", "link": {"return_url": "https://app.example.com/in"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let key = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    let text = a.smtp.wait_for("ada@example.com", 1).await.text().unwrap();
    let at = text.find("/l/").unwrap() + 3;
    let token: String = text[at..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client
        .get(format!("{}/l/{token}", a.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = page.text().await.unwrap();
    let at = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf = html[at..].split('"').next().unwrap().to_string();
    let r = client
        .post(format!("{}/l/{token}", a.addr))
        .header("cookie", cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("https://app.example.com/in?key={key}&status=verified")
    );
}

/// Across instances, a verify that finds every attempt taken waits for every verify of the
/// key still comparing on another instance, not only for the one that took the last
/// attempt. The right code is reserved first on A (where it queues behind two other keys'
/// hashing), then a wrong guess on B takes the last attempt, then the right code again on
/// B: told `otp_used` once A's verify lands (it was told `attempts_exhausted`, and A then
/// verified the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_never_called_exhausted_while_an_earlier_attempt_compares_on_another_instance() {
    let a = spawn_app_with(|s| {
        // One hashing thread an instance, and hashes slow enough to queue behind — yet
        // quick enough that A's right code, third in its queue, lands within the 2 s a
        // verify on B waits for it (4 iterations missed that on a loaded CI machine).
        s.hashing.max_concurrent = 1;
        s.hashing.iterations = 2;
    })
    .await;
    let b = instance_like(&a).await;
    let (_, sk) = a.tenant_with(json!({"max_attempts": 2})).await;
    let (key, code) = a.mint(&sk, "ada@example.com").await;
    let (k1, c1) = a.mint(&sk, "x1@example.com").await;
    let (k2, c2) = a.mint(&sk, "x2@example.com").await;
    let db = a.settings.database.url.clone();
    const USED: &str = "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM challenges";
    let busy = async {
        let (x, y) = tokio::join!(a.verify(&sk, &k1, &c1), a.verify(&sk, &k2, &c2));
        (x.0, y.0)
    };
    let right_on_a = async {
        crate::lifecycle::wait_sql(&db, USED, 2, "A's other verifies never reserved").await;
        a.verify(&sk, &key, &code).await
    };
    let on_b = async {
        crate::lifecycle::wait_sql(&db, USED, 3, "the right code never reserved on A").await;
        let again = async {
            crate::lifecycle::wait_sql(&db, USED, 4, "the wrong guess never reserved").await;
            b.verify(&sk, &key, &code).await
        };
        let guess = wrong(&code);
        tokio::join!(b.verify(&sk, &key, &guess), again)
    };
    let (busy, right, (guess, again)) = tokio::join!(busy, right_on_a, on_b);
    assert_eq!(busy, (StatusCode::OK, StatusCode::OK));
    assert_eq!(right.0, StatusCode::OK, "{right:?}");
    assert_eq!(
        (guess.0, &guess.1["attempts_remaining"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!(0)),
        "{guess:?}"
    );
    assert_eq!(
        (again.0, again.1["code"].as_str()),
        (StatusCode::GONE, Some("otp_used")),
        "{again:?}"
    );
}

/// `n` rows of `table` for `tenant`, numbered from `from`, at time `at` (in `at_col`):
/// every required column from the table's own description, `set` overriding.
fn pg_fill(
    c: &mut postgres::Client,
    tenant: &str,
    (table, at_col): (&str, &str),
    (at, n, from): (i64, i64, i64),
    set: &[(&str, &str)],
) {
    let cols = c
        .query(
            "SELECT column_name::text, data_type::text, is_nullable = 'NO' AND column_default \
             IS NULL AND is_identity = 'NO' FROM information_schema.columns WHERE table_name = $1",
            &[&table],
        )
        .unwrap();
    let (mut names, mut values) = (Vec::new(), Vec::new());
    for row in cols {
        let (name, ty, required): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        let given = set
            .iter()
            .find(|(c, _)| *c == name)
            .map(|(_, v)| v.to_string());
        let value = match (name.as_str(), given) {
            ("tenant_id", _) => format!("'{tenant}'"),
            (c, _) if c == at_col => at.to_string(),
            (_, Some(v)) => v,
            _ if !required => continue,
            _ => match ty.as_str() {
                "text" => "md5(i::text || random()::text)".into(),
                "bytea" => "decode(md5(i::text || random()::text), 'hex')".into(),
                "boolean" => "false".into(),
                _ => "i".into(),
            },
        };
        names.push(name);
        values.push(value);
    }
    c.batch_execute(&format!(
        "INSERT INTO {table} ({}) SELECT {} FROM generate_series({from}, {}) AS i",
        names.join(", "),
        values.join(", "),
        from + n - 1
    ))
    .unwrap();
}

/// On PostgreSQL too, a retention backlog larger than a batch (2,000) is purged whole,
/// table by table, batch after batch; rows still kept stay (the SQLite run of this is a
/// unit test of the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_backlog_larger_than_a_batch_is_deleted_whole_on_postgresql() {
    const TABLES: [(&str, &str); 10] = [
        ("challenges", "expires_at"),
        ("sends", "at"),
        ("audit", "at"),
        ("webhook_deliveries", "at"),
        ("sms_sends", "at"),
        ("test_inbox", "received_at"),
        ("hosted_sessions", "expires_at"),
        ("idempotency_keys", "expires_at"),
        ("webhook_events", "created_at"),
        ("provider_events", "received_at"),
    ];
    let (old, kept) = (1_000_i64, 9_000_000_000_000_i64);
    let app = spawn_app().await;
    let (tenant, _) = app.tenant().await;
    let url = app.settings.database.url.clone();
    pg_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        for table in TABLES {
            let set: &[(&str, &str)] = match table.0 {
                "challenges" => &[("status", "'verified'"), ("seq", "i")],
                "webhook_events" => &[("status", "'delivered'")],
                "provider_events" => &[("provider", "'ses'")],
                _ => &[],
            };
            pg_fill(&mut c, &tenant, table, (old, 4_007, 1_000_000), set);
            pg_fill(&mut c, &tenant, table, (kept, 10, 2_000_000), set);
        }
    });
    // Twice: a pass the app's own minutely purge ran beside may end a table early (a batch
    // that found rows taken by the other deletes fewer than a batch); the next finishes it.
    app.services.admin.purge_once().await.unwrap();
    app.services.admin.purge_once().await.unwrap();
    let url = app.settings.database.url.clone();
    let left = pg_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        TABLES.map(|(table, at)| {
            let row = c
                .query_one(
                    &format!(
                        "SELECT count(*) FILTER (WHERE {at} = $1), \
                         count(*) FILTER (WHERE {at} = $2) FROM {table}"
                    ),
                    &[&old, &kept],
                )
                .unwrap();
            (table, row.get::<_, i64>(0), row.get::<_, i64>(1))
        })
    });
    for (table, old, kept) in left {
        assert_eq!(
            (old, kept),
            (0, 10),
            "{table}: old rows left, or kept rows gone"
        );
    }
}
