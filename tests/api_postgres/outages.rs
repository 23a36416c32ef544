//! A PostgreSQL database that goes away (API.md §7, §19): cut, hung, a commit whose answer
//! was lost, an outage longer than a lease, a pooled connection the server ended — each
//! answers 503 or is served again without a restart, and nothing is sent twice.

use std::time::Duration;

use otpmint::testkit::proxy::Proxy;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// An app on a fresh database of its own reached through `proxy`, its store calls bounded
/// by a timeout of 1 s.
async fn app_through(proxy: &Proxy) -> TestApp {
    app_through_with(proxy, |_| {}).await
}

/// As [`app_through`], with settings of its own.
async fn app_through_with(
    proxy: &Proxy,
    tweak: impl FnOnce(&mut otpmint::config::Settings) + Send + 'static,
) -> TestApp {
    let port = proxy.port;
    spawn_app_with(move |s| {
        let url = s.database.url.clone();
        let name = url.rsplit('/').next().unwrap().to_string();
        let base = postgres_base_url().unwrap();
        let through = base.replacen("127.0.0.1:5432", &format!("127.0.0.1:{port}"), 1);
        s.database.url = pg_url_for(&through, &name);
        s.database.timeout_seconds = 1;
        tweak(s);
    })
    .await
}

/// A verify whose last write a stalled connection delivers late — after the bound of other
/// writes (twice `database.timeout_seconds`), within twice that — answers as the database
/// did: 200, the code verified (found by the outage audit: it answered 503 "nothing
/// changed" over a verify that took effect, and a retry with the same code said
/// `otp_used`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_whose_last_write_is_answered_late_gets_its_true_answer() {
    let proxy = Proxy::start("127.0.0.1:5432".into()).await;
    // A hash slow enough (some 0.5 s) for the test to pause the database while the guess
    // is compared.
    let app = app_through_with(&proxy, |s| s.hashing.iterations = 10).await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let db = app.settings.database.url.clone();
    const USED: &str = "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM challenges";
    let guess = app.verify(&sk, &key, &code);
    let stall = async {
        crate::lifecycle::wait_sql(&db, USED, 1, "the attempt was never reserved").await;
        proxy.pause();
        // Its last write waits from the end of the compare until the connection flows
        // again: past the 2 s bound of other writes, short of the 4 s of a final one.
        tokio::time::sleep(Duration::from_millis(3200)).await;
        proxy.resume();
    };
    let ((s, v), ()) = tokio::join!(guess, stall);
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, view) = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await;
    assert_eq!(view["status"], "verified", "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_cut_away_answers_503_and_service_resumes_when_it_returns() {
    let proxy = Proxy::start("127.0.0.1:5432".into()).await;
    let app = app_through(&proxy).await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let health = |path: &'static str| {
        let (c, url) = (app.client.clone(), format!("{}{path}", app.addr));
        async move { c.get(url).send().await.unwrap().status() }
    };
    assert_eq!(health("/readyz").await, StatusCode::OK);

    proxy.cut();
    let sent_before = app.smtp.messages().len();
    let r = app
        .post("/v1/otp", &sk, json!({"email": "bob@example.com"}))
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "unavailable");
    let (s, v) = app.verify(&sk, &key, &code).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
    );
    assert_eq!(health("/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        app.smtp.messages().len(),
        sent_before,
        "no mail for an unstored code"
    );

    proxy.restore();
    let mut ready = false;
    for _ in 0..50 {
        if health("/readyz").await == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "/readyz stays 503 after the database came back");
    // nothing changed while it was gone: the code still verifies, once
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let (k2, c2) = app.mint(&sk, "bob@example.com").await;
    assert_eq!(app.verify(&sk, &k2, &c2).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_answers_503_in_bounded_time_and_the_mint_sends_nothing_later() {
    let proxy = Proxy::start("127.0.0.1:5432".into()).await;
    let app = app_through(&proxy).await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;

    // The database hangs: every byte is taken, none answered (a stopped server).
    proxy.stall();
    let sent_before = app.smtp.messages().len();
    let asked = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        app.post("/v1/otp", &sk, json!({"email": "bob@example.com"})),
    )
    .await
    .expect("a sync mint must not wait for a hung database without end");
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "after {:?}",
        asked.elapsed()
    );
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "unavailable");
    let (s, v) = tokio::time::timeout(Duration::from_secs(30), app.verify(&sk, &key, &code))
        .await
        .expect("a verify must not wait without end either");
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
    );

    // It comes back (restarted): nothing the abandoned requests began is acted on.
    proxy.restore();
    let (k2, c2) = {
        let mut minted = None;
        for _ in 0..100 {
            let r = app
                .post("/v1/otp", &sk, json!({"email": "cy@example.com"}))
                .await;
            if r.status() == StatusCode::CREATED {
                let v: Value = r.json().await.unwrap();
                let key = v["shareable_key"].as_str().unwrap().to_string();
                minted = Some((key, app.smtp.wait_for("cy@example.com", 1).await.code()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        minted.expect("service resumes when the database is back")
    };
    assert_eq!(app.verify(&sk, &k2, &c2).await.0, StatusCode::OK);
    assert_eq!(
        app.smtp.count_to("bob@example.com"),
        0,
        "the mint answered 503 sends nothing, then or later"
    );
    assert_eq!(app.smtp.messages().len(), sent_before + 1);
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

/// A commit whose answer is lost (the connection broke after COMMIT reached the database)
/// is asked after on another connection and answered as it ended: a verify that used the
/// code answers 200 — not 503 with the code used up — and a mint that stored its code
/// answers as stored and its message goes out, once. A COMMIT the database never saw is
/// answered 503 and changes nothing, even when the database has not noticed the break.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_answered_as_it_ended() {
    use otpmint::testkit::proxy::AtCommit;
    let proxy = Proxy::start_reading_commits("127.0.0.1:5432".into()).await;
    let app = app_through(&proxy).await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let (key2, code2) = app.mint(&sk, "bob@example.com").await;
    let (key3, code3) = app.mint(&sk, "eve@example.com").await;

    proxy.at_commit(AtCommit::LoseAnswer);
    let (s, v) = app.verify(&sk, &key, &code).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = app
        .post(
            "/v1/otp",
            &sk,
            json!({"email": "cy@example.com", "delivery": "async"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let cy = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    let (dee, dee_code) = app.mint(&sk, "dee@example.com").await;

    // Every connection breaks with the one whose answer was lost, the pool's idle ones too
    // (a break of the network path): the commit is asked after on a new connection, and
    // the next request is served on new ones, not answered 503 for the dead ones.
    let (key4, code4) = app.mint(&sk, "fay@example.com").await;
    proxy.at_commit_of(AtCommit::LoseAll, "SET status = 'verified'");
    let (s, v) = app.verify(&sk, &key4, &code4).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    proxy.at_commit(AtCommit::Pass);
    let (gus, gus_code) = app.mint(&sk, "gus@example.com").await;

    // A COMMIT that never reaches the database: 503, and the code is untouched.
    proxy.at_commit(AtCommit::Drop);
    let (s, v) = app.verify(&sk, &key2, &code2).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
    );

    // One whose connection breaks unnoticed by the database (its session left in the
    // transaction, holding the code's row): 503, and the transaction is ended, not left
    // holding the code until the database notices.
    proxy.at_commit(AtCommit::Strand);
    let (s, v) = app.verify(&sk, &key3, &code3).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
    );

    proxy.at_commit(AtCommit::Pass);
    assert_eq!(app.verify(&sk, &key3, &code3).await.0, StatusCode::OK);
    let cy_code = app.smtp.wait_for("cy@example.com", 1).await.code();
    assert_eq!(app.verify(&sk, &cy, &cy_code).await.0, StatusCode::OK);
    assert_eq!(app.verify(&sk, &dee, &dee_code).await.0, StatusCode::OK);
    assert_eq!(app.verify(&sk, &gus, &gus_code).await.0, StatusCode::OK);
    assert_eq!(app.verify(&sk, &key2, &code2).await.0, StatusCode::OK);
    for (key, code) in [(&key, &code), (&key4, &code4)] {
        let (s, _) = app.verify(&sk, key, code).await;
        assert_ne!(s, StatusCode::OK, "the code verified once already");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for to in ["cy@example.com", "dee@example.com"] {
        assert_eq!(app.smtp.count_to(to), 1, "one message to {to}");
    }
}

/// API.md §11.3 on PostgreSQL: the relay takes a message while the database is cut away for
/// longer than the message's lease; once it is back the outcome is recorded and the message
/// is never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_unrecorded_through_an_outage_longer_than_its_lease_is_never_sent_again() {
    let proxy = Proxy::start("127.0.0.1:5432".into()).await;
    let direct = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let d2 = direct.clone();
    let app = spawn_app_with(move |s| {
        *d2.lock().unwrap() = s.database.url.clone();
        let name = s.database.url.rsplit('/').next().unwrap().to_string();
        let base = postgres_base_url().unwrap();
        let through = base.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
        s.database.url = pg_url_for(&through, &name);
        s.database.timeout_seconds = 1;
    })
    .await;
    let direct = direct.lock().unwrap().clone();
    app.smtp.set_delay(Duration::from_millis(800));
    let (_, sk) = app.tenant().await;
    let r = app
        .post(
            "/v1/otp",
            &sk,
            json!({"email": "ada@example.com", "delivery": "async"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let key = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    // Its send is recorded as begun just before the body leaves (after DATA's go-ahead):
    // once that mark is in, the body is on its way and the relay takes it 800 ms later.
    let url = direct.clone();
    let begun = move || {
        let url = url.clone();
        pg_blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let n: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM outbox WHERE leased_by IS NOT NULL AND NOT unstarted",
                    &[],
                )
                .unwrap()
                .get(0);
            n
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.smtp.in_data() == 0 || begun() == 0 {
        assert!(std::time::Instant::now() < deadline, "the send never began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.cut();
    app.smtp.wait_for("ada@example.com", 1).await;
    // The lease runs out while the database is away (on the database's own clock).
    let url = direct.clone();
    pg_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.execute("UPDATE outbox SET lease_until = 0", &[]).unwrap();
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = app
            .get(&format!("/v1/otp/{key}"), &sk)
            .await
            .json()
            .await
            .unwrap_or(Value::Null);
        if v["delivery"]["status"] == "sent" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never recorded: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.smtp.count_to("ada@example.com"), 1, "sent once");
}

/// With one pooled connection, ended by the database (a restart, an administrator's
/// `pg_terminate_backend`, `idle_session_timeout`) while it sat idle: the next request finds
/// it closed — at a read, or at the BEGIN of a write (a FATAL error, then the socket closed)
/// — and is served on a new one: not answered 503, and not left waiting out the pool's
/// timeout for a second connection the pool cannot make while it holds the dead one. The
/// instance's own background work (its senders poll every 250 ms) sometimes meets the dead
/// connection first; each case is tried three times, so the request meets it in most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pooled_connection_ended_by_the_database_is_replaced_at_the_next_request() {
    let app = spawn_app_with(|s| {
        s.database.pool_size = 1;
        s.database.timeout_seconds = 3;
    })
    .await;
    let (_, sk) = app.tenant().await;
    let name = app.database_name();
    let end_its_connections = || {
        let (base, name) = (postgres_base_url().unwrap(), name.clone());
        pg_blocking(move || {
            let mut c = postgres::Client::connect(&base, postgres::NoTls).unwrap();
            let ended: Vec<i32> = c
                .query(
                    "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&name],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(!ended.is_empty(), "the instance's connection was ended");
            // Gone (the signal is taken asynchronously), as after a restart.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while c
                .query_one(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                    &[&ended],
                )
                .unwrap()
                .get::<_, i64>(0)
                > 0
            {
                assert!(std::time::Instant::now() < deadline, "never ended");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    for round in 0..3 {
        // An admin's write (no read before its transaction).
        end_its_connections();
        let r = app
            .post(
                "/v1/tenants",
                ADMIN,
                json!({"name": format!("Bob {round}"), "smtp": app.smtp_json()}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "round {round}");

        // A tenant's verify (its key read first).
        let (key, code) = app.mint(&sk, &format!("ada{round}@example.com")).await;
        end_its_connections();
        let (s, v) = app.verify(&sk, &key, &code).await;
        assert_eq!(s, StatusCode::OK, "round {round}: {v}");
    }
}
