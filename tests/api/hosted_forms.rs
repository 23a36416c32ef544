//! Hosted pages (API.md §14.1, §17.6) as forms meet them: open registration waiting for the
//! admin, the host cookie, a form the pages cannot read, a code form posted again, a session
//! whose code is being checked, a code or session the store could not check or record, and
//! session ids kept only as digests.

use crate::claims::claim;
use crate::helpers::*;
use crate::hosted::*;
use reqwest::header;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Open registration (API.md §17.6): a tenant that registered itself has no hosted pages or
/// links (422 pages_not_approved), nor its brand on otpmint's pages, until the admin approves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_open_registration_pages_wait_for_the_admins_approval() {
    let app = spawn_app_with(|s| {
        s.server.public_url = "http://localhost:8080".into();
        s.registration.mode = otpmint::config::RegistrationMode::Open;
    })
    .await;
    let (s, v) = body(
        app.post(
            "/v1/tenants",
            "",
            json!({"name": "Self", "smtp": app.smtp_json()}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, &v["pages_approved"]),
        (StatusCode::CREATED, &json!(false)),
        "{v}"
    );
    let (id, sk) = (
        v["id"].as_str().unwrap().to_string(),
        v["secret_key"].as_str().unwrap().to_string(),
    );
    let r = app
        .patch(
            "/v1/tenant",
            &sk,
            json!({"allowed_return_urls": [RETURN], "branding": {"color": "#112233"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (s, v) = body(
        app.post(
            "/v1/tenant/hosted-sessions",
            &sk,
            json!({"return_url": RETURN}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("pages_not_approved")),
        "{v}"
    );
    let (s, v) = body(
        app.post(
            "/v1/otp",
            &sk,
            json!({"email": "ada@example.com", "link": {"return_url": RETURN}}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("pages_not_approved")),
        "{v}"
    );
    assert_eq!(app.smtp.count_to("ada@example.com"), 0);
    let css = reqwest::get(format!("{}/pages/brand/{id}.css", app.addr))
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::NOT_FOUND);
    // Only the admin approves.
    let (s, v) = body(
        app.patch("/v1/tenant", &sk, json!({"pages_approved": true}))
            .await,
    )
    .await;
    assert_eq!(
        (s, v["errors"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("pages_approved"))
    );
    let (s, v) = body(
        app.patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"pages_approved": true}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, &v["pages_approved"]),
        (StatusCode::OK, &json!(true)),
        "{v}"
    );
    open_session(&app, &sk, json!({"return_url": RETURN})).await;
    let css = reqwest::get(format!("{}/pages/brand/{id}.css", app.addr))
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    // A link sent while approved stops when the approval is taken back.
    let (s, _) = body(
        app.post(
            "/v1/otp",
            &sk,
            json!({"email": "cy@example.com", "link": {"return_url": RETURN}}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let text = app.smtp.wait_for("cy@example.com", 1).await.text().unwrap();
    let token: String = text
        .split("/l/")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let page = |t: String| {
        let url = format!("{}/l/{t}", app.addr);
        async move { reqwest::get(url).await.unwrap().status() }
    };
    assert_eq!(page(token.clone()).await, StatusCode::OK);
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"pages_approved": false}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(page(token).await, StatusCode::NOT_FOUND);
    // OtpMint-style registration without the admin token waits for approval too.
    let r = app
        .post(
            "/reg_secretkey",
            "",
            json!({"secretKey": "legacy-client-secret-key-0003", "smtp_host": "127.0.0.1",
                   "smtp_port": app.smtp.port, "smtp_mail": crate::smtp::SMTP_USER,
                   "smtp_password": crate::smtp::SMTP_PASS}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let list: Value = app.get("/v1/tenants", ADMIN).await.json().await.unwrap();
    let compat = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] != json!(id) && t["name"] != "Self")
        .unwrap()
        .clone();
    assert_eq!(compat["pages_approved"], false, "{compat}");
    // A tenant the admin creates is approved from the start.
    let (s, v) = body(
        app.post(
            "/v1/tenants",
            ADMIN,
            json!({"name": "Admin's", "smtp": app.smtp_json()}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, &v["pages_approved"]),
        (StatusCode::CREATED, &json!(true))
    );
}

/// The pages' CSRF cookie is a `__Host-` cookie whose value the server chose: a planted one
/// is replaced, and a form posted with it does nothing (API.md §17.5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosted_page_cookie_is_a_host_cookie_the_server_chose() {
    let (app, sk) = hosted_app("https://app.example.com").await;
    let (id, _) = open_session(&app, &sk, json!({"return_url": RETURN})).await;
    let mut b = Browser::new(&app);
    let (s, h, html) = b.get(&format!("/h/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    let set = h[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(set.starts_with("__Host-otpmint_hosted="), "{set}");
    assert!(
        set.contains("; Path=/;") && !set.contains("Domain="),
        "{set}"
    );
    assert!(set.contains("; Secure"), "{set}");
    let issued = b.cookie.clone().unwrap();
    let send = unescape(attr(&html, "<form method=\"post\" action=\""));

    // A planted value is replaced by one the server chose …
    let planted = "__Host-otpmint_hosted=attacker-chosen-value".to_string();
    b.cookie = Some(planted.clone());
    let (s, _, html) = b.get(&format!("/h/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    let fresh = b.cookie.clone().unwrap();
    assert_ne!(fresh, planted);
    assert_ne!(fresh, issued);
    let csrf = attr(&html, "name=\"csrf\" value=\"").to_string();
    // … and a form posted with the planted value, even with the page's token, does nothing.
    let mut planter = Browser::new(&app);
    planter.cookie = Some(planted);
    let (s, _, _) = planter
        .post(&send, &[("csrf", &csrf), ("email", "ada@example.com")])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(app.smtp.messages().is_empty());
    // With the cookie the page set, the code goes out.
    let (s, _, _) = b
        .post(&send, &[("csrf", &csrf), ("email", "ada@example.com")])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    app.smtp.wait_for("ada@example.com", 1).await;
}

/// A form the pages cannot read: a short plain page with every page's headers (not actix's
/// own text), the status saying why, and nothing sent.
#[tokio::test]
async fn a_form_the_pages_cannot_read_gets_a_plain_page_and_changes_nothing() {
    let (app, sk) = hosted_app("https://app.example.com").await;
    let (id, _) = open_session(&app, &sk, json!({"return_url": RETURN})).await;
    let send = format!("{}/h/{id}/send", app.addr);
    let long = format!("csrf=x&email={}", "a".repeat(20 * 1024));
    for (ct, bytes, status, says) in [
        (
            "application/x-www-form-urlencoded",
            "csrf=a&csrf=b".to_string(),
            StatusCode::BAD_REQUEST,
            "could not be read",
        ),
        (
            "application/json",
            r#"{"email":"bob@example.com"}"#.to_string(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/x-www-form-urlencoded",
        ),
        (
            "application/x-www-form-urlencoded",
            long,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
        ),
    ] {
        let r = app
            .client
            .post(&send)
            .header(header::CONTENT_TYPE, ct)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{ct}");
        let h = r.headers().clone();
        assert!(h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert!(h.contains_key("x-request-id"));
        let text = r.text().await.unwrap();
        assert!(text.contains(says), "{ct}: {text}");
    }
    // Nothing was sent: the session still asks for an address.
    let (s, v) = body(
        app.get(&format!("/v1/tenant/hosted-sessions/{id}"), &sk)
            .await,
    )
    .await;
    assert_eq!(
        (s, &v["status"], &v["email"]),
        (StatusCode::OK, &json!("open"), &Value::Null),
        "{v}"
    );
    assert_eq!(app.smtp.count_to("bob@example.com"), 0);
}

/// A page's code form posted again after it was answered — a reload after a wrong code, a
/// double click's second post — with the same wrong code spends no second attempt (the form
/// carries the attempts used when it was made); another code, or a form the pages did not
/// make, is checked and spends one as always; a form made before a wrong guess still takes
/// the right code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_form_posted_again_with_its_wrong_code_spends_no_second_attempt() {
    let (app, sk) = hosted_app("https://app.example.com").await;
    let (id, mut b, _, code) = code_sent_on_the_page(&app, &sk).await;
    let (_, _, html) = b.get(&format!("/h/{id}")).await;
    let csrf = attr(&html, "name=\"csrf\" value=\"").to_string();
    assert_eq!(attr(&html, "name=\"seen\" value=\""), "0", "{html}");
    let verify = format!("/h/{id}/verify");
    let [w1, w2] = [1, 2].map(|d| {
        wrong(&code)
            .chars()
            .map(|c| char::from(b'0' + (c as u8 - b'0' + d - 1) % 10))
            .collect::<String>()
    });
    assert_ne!(w2, code);
    let left = |html: &str| {
        (
            attr(html, "name=\"seen\" value=\"").to_string(),
            html.contains("That code is not right."),
        )
    };
    // The form as the page made it, posted three times: one attempt.
    for _ in 0..3 {
        let (s, _, html) = b
            .post(&verify, &[("csrf", &csrf), ("seen", "0"), ("code", &w1)])
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(left(&html), ("1".to_string(), true), "{html}");
        assert!(html.contains("Attempts left: 4."), "{html}");
    }
    // Another code in that form is checked.
    let (_, _, html) = b
        .post(&verify, &[("csrf", &csrf), ("seen", "0"), ("code", &w2)])
        .await;
    assert_eq!(left(&html), ("2".to_string(), true), "{html}");
    // A form the pages did not make (no count) is checked, the same code too.
    let (_, _, html) = b.post(&verify, &[("csrf", &csrf), ("code", &w2)]).await;
    assert_eq!(left(&html), ("3".to_string(), true), "{html}");
    // The first page's form, with the right code: verified.
    let (s, h, _) = b
        .post(&verify, &[("csrf", &csrf), ("seen", "0"), ("code", &code)])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(h[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .starts_with(RETURN));
}

/// A session whose code's only attempt is the right code still being compared is not
/// `failed` (which is final): its status read, and its page in another tab, wait for the
/// outcome, `verified`. (Before, both said failed until the verify was done.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_code_is_being_checked_is_never_shown_failed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let app = spawn_app_with(|s| s.server.public_url = "http://localhost:8080".into()).await;
    let (_, sk) = app.tenant_with(json!({"max_attempts": 1})).await;
    let urls = json!({ "allowed_return_urls": ["https://app.example.com"] });
    assert_eq!(
        app.patch("/v1/tenant", &sk, urls).await.status(),
        StatusCode::OK
    );
    let (id, mut b, csrf, code) = code_sent_on_the_page(&app, &sk).await;
    let done = AtomicBool::new(false);
    let verify = async {
        let path = format!("/h/{id}/verify");
        let (s, _, _) = b.post(&path, &[("csrf", &csrf), ("code", &code)]).await;
        done.store(true, Ordering::SeqCst);
        s
    };
    let poll = async {
        let mut seen = Vec::new();
        while !done.load(Ordering::SeqCst) {
            let path = format!("/v1/tenant/hosted-sessions/{id}");
            let (_, v) = body(app.get(&path, &sk).await).await;
            seen.push(v["status"].as_str().unwrap_or_default().to_string());
        }
        seen
    };
    // The page as another tab shows it meanwhile.
    let tab = async {
        let mut over = 0;
        let mut tab = Browser::new(&app);
        while !done.load(Ordering::SeqCst) {
            let (_, _, html) = tab.get(&format!("/h/{id}")).await;
            over += usize::from(html.contains("can no longer be completed"));
        }
        over
    };
    let (s, seen, over) = tokio::join!(verify, poll, tab);
    assert_eq!(over, 0, "the page said the sign-in was over");
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(
        seen.iter().all(|st| st == "open" || st == "verified"),
        "{seen:?}"
    );
}

/// A code the page could not check (its database away) is told so — not "could not be
/// sent", which would send the person for a new code — and the same code verifies once
/// the database is back: no attempt was used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_the_page_could_not_check_says_so_and_verifies_after() {
    if skip_on_postgres("the database is held from outside only on SQLite") {
        return;
    }
    let (app, sk) = hosted_app_with(RETURN, |s| s.database.timeout_seconds = 1).await;
    let (id, mut b, csrf, code) = code_sent_on_the_page(&app, &sk).await;
    let verify = format!("/h/{id}/verify");
    let lock = HeldLock::sqlite_write(&app.db_path());
    let (s, _, html) = b.post(&verify, &[("csrf", &csrf), ("code", &code)]).await;
    lock.release();
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{html}");
    assert!(html.contains("could not be checked"), "{html}");
    assert!(!html.contains("could not be sent"), "{html}");
    let (s, h, _) = b.post(&verify, &[("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], format!("{RETURN}?session={id}"));
}

/// A right code whose session could not be recorded (its row held by another transaction
/// past the lock timeout) is not spent: the code and its session are recorded in one
/// transaction, so the page says the code could not be checked, nothing changed, and the
/// same code then verifies, sends this browser back to the tenant, and the session is
/// claimed — never a code used up by a sign-in that cannot complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_right_code_whose_session_could_not_be_recorded_is_not_spent_and_verifies_after() {
    if !on_postgres() {
        eprintln!("skipped on SQLite: only PostgreSQL locks one row while others are written");
        return;
    }
    let (app, sk) = hosted_app_with(RETURN, |s| s.database.timeout_seconds = 1).await;
    let (id, mut b, csrf, code) = code_sent_on_the_page(&app, &sk).await;
    // Another transaction holds the session's row (stored under its id's SHA-256).
    let stored = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(id.as_bytes()))
    };
    let lock = HeldLock::pg_row(&app.settings.database.url, "hosted_sessions", &stored);
    let verify = format!("/h/{id}/verify");
    let (s, _, html) = b.post(&verify, &[("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{html}");
    assert!(html.contains("could not be checked"), "{html}");
    let (s, _, html) = b.get(&format!("/h/{id}")).await;
    assert_ne!(s, StatusCode::SEE_OTHER, "{html}");
    lock.release();
    // Nothing was spent: the code is pending with its attempt given back, the session open.
    let db = app.settings.database.url.clone();
    let q = "SELECT COUNT(*) FROM challenges WHERE status = 'pending' AND attempts = 0";
    assert_eq!(crate::lifecycle::sql(&db, q), 1);
    let q = "SELECT COUNT(*) FROM hosted_sessions WHERE status = 'open' AND finished_by IS NULL";
    assert_eq!(crate::lifecycle::sql(&db, q), 1);
    // The same code verifies now, and the page sends this browser back to the tenant.
    let (s, h, html) = b.post(&verify, &[("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(h[header::LOCATION], format!("{RETURN}?session={id}"));
    let (s, h, _) = b.get(&format!("/h/{id}")).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], format!("{RETURN}?session={id}"));
    let path = format!("/v1/tenant/hosted-sessions/{id}/claim");
    let (s, v) = claim(&app, &sk, &path, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["email"], "ada@example.com", "{v}");
}

/// Run `sql` with the text parameters `params` on the app's database, SQLite or PostgreSQL
/// (`$1`, `$2` on both).
pub(crate) fn exec_sql(app: &TestApp, sql: &'static str, params: [String; 2]) -> u64 {
    if !on_postgres() {
        let c = rusqlite::Connection::open(app.db_path()).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        return c
            .execute(sql, rusqlite::params![params[0], params[1]])
            .unwrap() as u64;
    }
    let url = app.settings.database.url.clone();
    pg_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.execute(sql, &[&params[0], &params[1]]).unwrap()
    })
}

/// A session's id opens its page, so the database keeps only its SHA-256: a copy of the
/// database opens no page. A session stored before (its id as it is) still goes the
/// whole way: page, code, verify, status, claim once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_id_is_kept_only_as_a_digest_and_one_kept_whole_before_still_works() {
    use sha2::Digest;
    let (app, sk) = hosted_app(RETURN).await;
    for (n, kept_whole) in [(0, false), (1, true)] {
        let to = format!("ada{n}@example.com");
        let (id, _) = open_session(&app, &sk, json!({"return_url": RETURN, "email": to})).await;
        let stored = app.stored_bytes();
        assert!(
            !stored.windows(id.len()).any(|w| w == id.as_bytes()),
            "the id is in the database"
        );
        let digest = hex::encode(sha2::Sha256::digest(id.as_bytes()));
        assert!(stored.windows(digest.len()).any(|w| w == digest.as_bytes()));
        if kept_whole {
            let rows = exec_sql(
                &app,
                "UPDATE hosted_sessions SET id = $1 WHERE id = $2",
                [id.clone(), digest],
            );
            assert_eq!(rows, 1);
        }
        let (mut b, csrf) = on_the_page(&app, &id).await;
        let (s, _, _) = b.post(&format!("/h/{id}/send"), &[("csrf", &csrf)]).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{to}");
        let code = app.smtp.wait_for(&to, 1).await.code();
        let (s, _, html) = b
            .post(
                &format!("/h/{id}/verify"),
                &[("csrf", &csrf), ("code", &code)],
            )
            .await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{to}: {html}");
        let (s, v) = body(
            app.get(&format!("/v1/tenant/hosted-sessions/{id}"), &sk)
                .await,
        )
        .await;
        assert_eq!(
            (s, v["status"].as_str()),
            (StatusCode::OK, Some("verified")),
            "{v}"
        );
        let path = format!("/v1/tenant/hosted-sessions/{id}/claim");
        let (s, v) = claim(&app, &sk, &path, None).await;
        assert_eq!(
            (s, v["email"].as_str()),
            (StatusCode::OK, Some(to.as_str())),
            "{v}"
        );
        assert_eq!(claim(&app, &sk, &path, None).await.0, StatusCode::CONFLICT);
    }
}
