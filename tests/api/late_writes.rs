//! Writes the database takes only after their request answered 503 (API.md §6.24, §8.5:
//! "requests answer 503 and change nothing"). On PostgreSQL a write made of several
//! statements, each waiting on a lock for less than `database.timeout_seconds`, may commit
//! after its request stopped waiting (at twice that); what it changed is then taken back.
//! Each test holds the locks such a write takes in turn, from connections of its own.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// `database.timeout_seconds`: each statement waits on a lock up to this, the request up to
/// twice this.
const TIMEOUT_S: u64 = 2;
/// How long each held lock makes its statement wait: 0.8 × the timeout, so no statement
/// times out while three such waits (2.4 ×) outlast the request's bound (2 ×).
const STEP: Duration = Duration::from_millis(1600);

/// The recipient's quota and failure-budget lock (an advisory lock, as the store names it).
const RECIPIENT_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('r' || chr(31) || \
     tenant_id || chr(31) || email_canonical, 0)) FROM challenges";
/// The tenant's hourly-quota lock.
const TENANT_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('t' || chr(31) || id, 0)) FROM tenants";
/// The code's row.
const CODE_ROW: &str = "SELECT 1 FROM challenges FOR UPDATE";
/// The lock of the codes of one recipient and purpose (a mint's group), as the store names it.
const GROUP_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('g' || chr(31) || \
     tenant_id || chr(31) || email_canonical || chr(31) || purpose || chr(31) || flavor, 0)) \
     FROM challenges";

/// Take every lock of `locks` now (each in a transaction of its own), then let the first go
/// after one [`STEP`], the next after two, and so on; the handle ends once all are gone.
fn hold_in_turn(url: &str, locks: &[&str]) -> tokio::task::JoinHandle<()> {
    let held: Vec<HeldLock> = locks.iter().map(|l| HeldLock::pg_sql(url, l)).collect();
    tokio::task::spawn_blocking(move || {
        for lock in held {
            std::thread::sleep(STEP);
            lock.release();
        }
    })
}

/// One text column of the only row `q` selects.
fn pg_text(url: &str, q: &'static str) -> Option<String> {
    let url = url.to_string();
    pg_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query_one(q, &[]).unwrap().get(0)
    })
}

/// A verify answered 503 while its reservation of an attempt was still waiting on locks:
/// when the reservation commits after all, the attempt and the recipient's failure it took
/// are given back, and the code still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_that_commits_after_its_503_gives_its_attempt_back() {
    if !on_postgres() {
        eprintln!("SKIPPED on SQLite: its single writer never begins a write it gave up on");
        return;
    }
    let app = spawn_app_with(|s| {
        s.database.timeout_seconds = TIMEOUT_S;
        s.limits.recipient_max_failures = 10;
    })
    .await;
    let (_, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    let db = app.settings.database.url.clone();
    // A wrong guess first: the recipient's failure row exists, and can be held.
    let (s, v) = app.verify(&sk, &key, &wrong(&code)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    const USED: &str = "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM challenges";
    const FAILED: &str =
        "SELECT CAST(COALESCE(SUM(failures), 0) AS BIGINT) FROM recipient_failures";
    const STAMP: &str = "SELECT attempt_by FROM challenges";
    let first = pg_text(&db, STAMP);
    let held = hold_in_turn(
        &db,
        &[
            RECIPIENT_LOCK,
            CODE_ROW,
            "SELECT 1 FROM recipient_failures FOR UPDATE",
        ],
    );
    let (s, v) = app.verify(&sk, &key, &code).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    held.await.unwrap();
    // The reservation did commit (its stamp is on the row), and is then given back.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while pg_text(&db, STAMP) == first {
        assert!(
            std::time::Instant::now() < deadline,
            "the reservation never committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    crate::lifecycle::wait_sql(&db, USED, 1, "the late attempt was never given back").await;
    crate::lifecycle::wait_sql(&db, FAILED, 1, "the late failure was never given back").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

/// A sync resend answered 503 while its change was still waiting on locks: when it commits
/// after all, its message (leased by this instance, which will never send it) is given up
/// as never sent at once, instead of holding the key (409) until its lease runs out; a
/// resend then sends a code that verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_that_commits_after_its_503_leaves_the_key_free_to_resend() {
    a_late_resend_sends_nothing("sync").await;
}

/// The same of an async resend: its message, never handed to a sender, is given up as never
/// sent (found by the second re-run of the outage audit: such resends were mailed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_resend_that_commits_after_its_503_sends_nothing() {
    a_late_resend_sends_nothing("async").await;
}

/// A resend of a key minted with `delivery` answered 503 while its change waited on locks,
/// which then commits: nothing is sent, the message is recorded failed, and the key may be
/// resent, with a code that verifies.
async fn a_late_resend_sends_nothing(delivery: &str) {
    if !on_postgres() {
        eprintln!("SKIPPED on SQLite: its single writer never begins a write it gave up on");
        return;
    }
    let app = spawn_app_with(|s| {
        s.database.timeout_seconds = TIMEOUT_S;
        s.otp.max_resends = 3;
        s.limits.recipient_max_sends = 100;
        s.limits.resend_cooldown_seconds = 0;
        s.limits.tenant_max_sends_per_hour = 1000;
    })
    .await;
    let (_, sk) = app.tenant().await;
    let mint = json!({"email": "ada@example.com", "delivery": delivery});
    let (s, v) = body(app.post("/v1/otp", &sk, mint).await).await;
    assert!(s.is_success(), "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    app.smtp.wait_for("ada@example.com", 1).await;
    let db = app.settings.database.url.clone();
    const RESENDS: &str = "SELECT CAST(COALESCE(SUM(resends), 0) AS BIGINT) FROM challenges";
    const WAITING: &str = "SELECT COUNT(*) FROM outbox";
    crate::lifecycle::wait_sql(&db, WAITING, 0, "the first message still waits").await;
    let resend = format!("/v1/otp/{key}/resend");
    let held = hold_in_turn(&db, &[RECIPIENT_LOCK, CODE_ROW, TENANT_LOCK]);
    let (s, v) = body(app.post(&resend, &sk, json!({})).await).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    held.await.unwrap();
    crate::lifecycle::wait_sql(&db, RESENDS, 1, "the late resend never committed").await;
    crate::lifecycle::wait_sql(&db, WAITING, 0, "the late resend's message still waits").await;
    let (_, view) = body(app.get(&format!("/v1/otp/{key}"), &sk).await).await;
    assert_eq!(view["delivery"]["status"], "failed", "{view}");
    // Longer than the sender takes to find a queued message (a poll is 250 ms).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.smtp.count_to("ada@example.com"),
        1,
        "the late one went out"
    );
    let (s, v) = body(app.post(&resend, &sk, json!({})).await).await;
    assert!(s.is_success(), "{v}");
    assert_eq!(v["resends"], 2, "{v}");
    let code = app.smtp.wait_for("ada@example.com", 2).await.code();
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
}

/// An async mint answered 503 while its store was still waiting on locks: when it commits
/// after all, its code is cancelled and its message never goes out (found by the outage
/// audit: the queue's sender sent it at once, before the undo cancelled the code — a code
/// nobody holds a key for). Its row is this instance's lease, handed to its sender only
/// when the store answers in time. The earlier code stays valid (nothing superseded it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_mint_that_commits_after_its_503_sends_nothing() {
    if !on_postgres() {
        eprintln!("SKIPPED on SQLite: its single writer never begins a write it gave up on");
        return;
    }
    let app = spawn_app_with(|s| {
        s.database.timeout_seconds = TIMEOUT_S;
        s.limits.recipient_max_sends = 100;
        s.limits.resend_cooldown_seconds = 0;
        s.limits.tenant_max_sends_per_hour = 1000;
    })
    .await;
    let (_, sk) = app.tenant().await;
    // A first code: the locks below are taken through its row.
    let (first, code) = app.mint(&sk, "ada@example.com").await;
    let db = app.settings.database.url.clone();
    let held = hold_in_turn(&db, &[RECIPIENT_LOCK, GROUP_LOCK, TENANT_LOCK]);
    let mint = json!({"email": "ada@example.com", "delivery": "async"});
    let (s, v) = body(app.post("/v1/otp", &sk, mint).await).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    held.await.unwrap();
    const CODES: &str = "SELECT COUNT(*) FROM challenges";
    crate::lifecycle::wait_sql(&db, CODES, 2, "the late mint never committed").await;
    const CANCELLED: &str = "SELECT COUNT(*) FROM challenges WHERE status = 'cancelled'";
    crate::lifecycle::wait_sql(&db, CANCELLED, 1, "the late code was never cancelled").await;
    // Longer than the sender takes to find a queued message (a poll is 250 ms).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        app.smtp.count_to("ada@example.com"),
        1,
        "the late one went out"
    );
    assert_eq!(app.verify(&sk, &first, &code).await.0, StatusCode::OK);
}

/// The key digest and claim time of the only code stored.
fn claimed_row(url: &str) -> (Vec<u8>, i64) {
    const Q: &str = "SELECT key_digest, claimed_at FROM challenges";
    if let Some(path) = url.strip_prefix("sqlite://") {
        let c = rusqlite::Connection::open(path).unwrap();
        return c.query_row(Q, [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    }
    let url = url.to_string();
    pg_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let r = c.query_one(Q, &[]).unwrap();
        (r.get(0), r.get(1))
    })
}

/// What a claim that commits after its 503 is undone by: the claim made at that moment is
/// taken back (the outcome can be claimed again), one made at another moment stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_taken_back_only_by_the_undo_of_the_claim_that_made_it() {
    use otpmint::domain::keys::TenantId;
    let app = spawn_app().await;
    let (id, sk) = app.tenant().await;
    let (key, code) = app.mint(&sk, "ada@example.com").await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    let path = format!("/v1/otp/{key}/claim");
    let (s, v) = body(app.post(&path, &sk, json!({})).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (digest, at) = claimed_row(&app.settings.database.url);
    let unclaim = |at: i64| {
        let (tid, d) = (TenantId::parse(&id).unwrap(), digest.clone());
        app.services.core.db(move |s| s.unclaim_code(&tid, &d, at))
    };
    unclaim(at + 1).await.unwrap();
    let (s, v) = body(app.post(&path, &sk, json!({})).await).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_claimed")),
        "{v}"
    );
    unclaim(at).await.unwrap();
    let (s, v) = body(app.post(&path, &sk, json!({})).await).await;
    assert_eq!(
        (s, v["email"].as_str()),
        (StatusCode::OK, Some("ada@example.com")),
        "{v}"
    );
}
