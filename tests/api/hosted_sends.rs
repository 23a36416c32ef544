//! Hosted pages (API.md §14.1) sending codes: a new code on the page, the cooldown, resends
//! spent, a suppressed address, and a double click on send (one instance or two) minting once.

use crate::helpers::*;
use crate::hosted::*;
use reqwest::header;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_code_on_the_page_keeps_the_key_and_an_expired_code_leaves_the_session_open() {
    let (app, sk) = hosted_app("https://app.example.com").await;
    let (id, _) = open_session(
        &app,
        &sk,
        json!({"return_url": RETURN, "email": "ada@example.com"}),
    )
    .await;
    let (mut b, csrf) = on_the_page(&app, &id).await;
    let send = format!("/h/{id}/send");
    let verify = format!("/h/{id}/verify");
    assert_eq!(
        b.post(&send, &[("csrf", &csrf)]).await.0,
        StatusCode::SEE_OTHER
    );
    let first = app.smtp.wait_for("ada@example.com", 1).await.code();
    // "Send a new code": the same key, so the first code still works; the page it goes
    // back to says that a new one was sent.
    let (s, h, _) = b.post(&send, &[("csrf", &csrf)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let resent = h[header::LOCATION].to_str().unwrap().to_string();
    assert_eq!(resent, format!("/h/{id}?sent=again"));
    app.smtp.wait_for("ada@example.com", 2).await;
    let (s, _, html) = b.get(&resent).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("We sent a new code to a***@example.com."),
        "{html}"
    );
    let (s, h, _) = b.post(&verify, &[("csrf", &csrf), ("code", &first)]).await;
    assert_eq!(
        (s, h[header::LOCATION].to_str().unwrap()),
        (
            StatusCode::SEE_OTHER,
            format!("{RETURN}?session={id}").as_str()
        )
    );

    // A code that expired: said so, the form stays, and a new code finishes the session.
    let (id, _) = open_session(
        &app,
        &sk,
        json!({"return_url": RETURN, "email": "bob@example.com"}),
    )
    .await;
    let (mut b, csrf) = on_the_page(&app, &id).await;
    b.post(&format!("/h/{id}/send"), &[("csrf", &csrf)]).await;
    let old = app.smtp.wait_for("bob@example.com", 1).await.code();
    app.clock.advance_secs(601);
    let (s, _, html) = b
        .post(
            &format!("/h/{id}/verify"),
            &[("csrf", &csrf), ("code", &old)],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        html.contains("expired") && html.contains("name=\"code\""),
        "{html}"
    );
    // The focus is on what the error asks for, a new code, and the code typed is not called
    // invalid: it was right, and it ended.
    assert!(
        html.contains("class=\"secondary\" autofocus aria-describedby=\"error\">")
            && !html.contains("maxlength=\"40\" required autofocus")
            && !html.contains("aria-invalid"),
        "{html}"
    );
    let (s, _, _) = b.post(&format!("/h/{id}/send"), &[("csrf", &csrf)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let new = app.smtp.wait_for("bob@example.com", 2).await.code();
    let (s, _, _) = b
        .post(
            &format!("/h/{id}/verify"),
            &[("csrf", &csrf), ("code", &new)],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let v = body(
        app.get(&format!("/v1/tenant/hosted-sessions/{id}"), &sk)
            .await,
    )
    .await
    .1;
    assert_eq!(
        (&v["status"], &v["email"]),
        (&json!("verified"), &json!("bob@example.com")),
        "{v}"
    );
}

/// A second send within the resend cooldown: the page says how long to wait, not that
/// there were too many attempts, and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_within_the_cooldown_says_how_long_to_wait() {
    let (app, sk) = hosted_app_with(RETURN, |s| s.limits.resend_cooldown_seconds = 30).await;
    let (id, _) = open_session(
        &app,
        &sk,
        json!({"return_url": RETURN, "email": "ada@example.com"}),
    )
    .await;
    let (mut b, csrf) = on_the_page(&app, &id).await;
    let send = format!("/h/{id}/send");
    assert_eq!(
        b.post(&send, &[("csrf", &csrf)]).await.0,
        StatusCode::SEE_OTHER
    );
    app.smtp.wait_for("ada@example.com", 1).await;
    let (s, _, html) = b.post(&send, &[("csrf", &csrf)]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{html}");
    let at = html.find("Please wait ").expect("how long to wait") + "Please wait ".len();
    let secs: u64 = html[at..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number of seconds");
    assert!((1..=30).contains(&secs), "{secs}");
    assert_eq!(app.smtp.count_to("ada@example.com"), 1);

    // The address typed on another session's page within the cooldown: the wait is said,
    // and the address stays in its field, not called invalid (it was fine).
    let (id, _) = open_session(&app, &sk, json!({"return_url": RETURN})).await;
    let (mut b, csrf) = on_the_page(&app, &id).await;
    let (s, _, html) = b
        .post(
            &format!("/h/{id}/send"),
            &[("csrf", &csrf), ("email", "ada@example.com")],
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{html}");
    assert!(
        html.contains("Please wait ")
            && html.contains("value=\"ada@example.com\"")
            && !html.contains("aria-invalid"),
        "{html}"
    );
    assert_eq!(app.smtp.count_to("ada@example.com"), 1);
}

/// A send posted again after it was answered — a double click on "Send code" whose second
/// post comes once the first sent the code, a reload of that answer — shows the code's form,
/// not the cooldown, and sends nothing: the form carries the codes the session had sent when
/// it was made (found by the browser audit). The page's "send a new code" is a resend as
/// before (here: the cooldown), and so is a send form the pages did not make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_form_posted_again_after_its_code_went_shows_the_code_form() {
    let (app, sk) = hosted_app_with(RETURN, |s| s.limits.resend_cooldown_seconds = 30).await;
    let mark = |html: &str| attr(html, "name=\"sent\" value=\"").to_string();
    for preset in [true, false] {
        let to = format!("again-{preset}@example.com");
        let open = if preset {
            json!({"return_url": RETURN, "email": to})
        } else {
            json!({"return_url": RETURN})
        };
        let (id, _) = open_session(&app, &sk, open).await;
        let (mut b, csrf) = on_the_page(&app, &id).await;
        let (_, _, html) = b.get(&format!("/h/{id}")).await;
        assert_eq!(mark(&html), "0", "{html}");
        let send = format!("/h/{id}/send");
        let form = [("csrf", csrf.as_str()), ("sent", "0"), ("email", &to)];
        let (s, h, _) = b.post(&send, &form).await;
        assert_eq!(s, StatusCode::SEE_OTHER);
        let page = h[header::LOCATION].to_str().unwrap().to_string();
        app.smtp.wait_for(&to, 1).await;
        // The same form again: to the code's page, as the first answer went.
        let (s, h, html) = b.post(&send, &form).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{html}");
        assert_eq!(h[header::LOCATION].to_str().unwrap(), page);
        let (_, _, html) = b.get(&format!("/h/{id}")).await;
        assert!(
            html.contains("name=\"code\"") && !html.contains("Please wait"),
            "{html}"
        );
        // Its "send a new code" form carries what was sent; posted, that is a resend.
        let sent = mark(&html);
        assert_ne!(sent, "0", "{html}");
        let (s, _, html) = b.post(&send, &[("csrf", &csrf), ("sent", &sent)]).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{html}");
        assert!(html.contains("Please wait "), "{html}");
        // A form without the mark (not the pages') meets the cooldown too.
        let (s, _, _) = b.post(&send, &[("csrf", &csrf)]).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(app.smtp.count_to(&to), 1);
    }
    // Once the code expired, "send a new code" posted twice sends one new code: the second
    // post shows it as sent (found by a review: a new key's count started again).
    let to = "again-expired@example.com";
    let (id, _) = open_session(&app, &sk, json!({"return_url": RETURN, "email": to})).await;
    let (mut b, csrf) = on_the_page(&app, &id).await;
    let send = format!("/h/{id}/send");
    let (s, _, _) = b.post(&send, &[("csrf", &csrf), ("sent", "0")]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    app.smtp.wait_for(to, 1).await;
    app.clock.advance_secs(601);
    let (_, _, html) = b.get(&format!("/h/{id}")).await;
    let sent = mark(&html);
    for _ in 0..2 {
        let (s, h, html) = b.post(&send, &[("csrf", &csrf), ("sent", &sent)]).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{html}");
        assert!(
            h[header::LOCATION]
                .to_str()
                .unwrap()
                .ends_with("?sent=again"),
            "{h:?}"
        );
    }
    let code = app.smtp.wait_for(to, 2).await.code();
    assert_eq!(app.smtp.count_to(to), 2);
    let (s, h, _) = b
        .post(
            &format!("/h/{id}/verify"),
            &[("csrf", &csrf), ("code", &code)],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(h[header::LOCATION].to_str().unwrap().starts_with(RETURN));
}

/// The key's resends spent, the button for a new code is gone — until that code expires:
/// then a new code (under a new key) is a click away again and finishes the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_resends_are_spent_offers_a_new_code_once_the_last_expires() {
    let (app, sk) = hosted_app_with(RETURN, |s| s.otp.max_resends = 1).await;
    let (id, _) = open_session(
        &app,
        &sk,
        json!({"return_url": RETURN, "email": "ada@example.com"}),
    )
    .await;
    let (mut b, csrf) = on_the_page(&app, &id).await;
    let send = format!("/h/{id}/send");
    for n in 1..=2 {
        assert_eq!(
            b.post(&send, &[("csrf", &csrf)]).await.0,
            StatusCode::SEE_OTHER
        );
        app.smtp.wait_for("ada@example.com", n).await;
    }
    let (_, _, html) = b.get(&format!("/h/{id}")).await;
    assert!(
        html.contains("name=\"code\"") && !html.contains("Send a new code"),
        "{html}"
    );
    app.clock.advance_secs(601);
    let (_, _, html) = b.get(&format!("/h/{id}")).await;
    assert!(html.contains("Send a new code"), "{html}");
    assert_eq!(
        b.post(&send, &[("csrf", &csrf)]).await.0,
        StatusCode::SEE_OTHER
    );
    let new = app.smtp.wait_for("ada@example.com", 3).await.code();
    let (s, h, _) = b
        .post(
            &format!("/h/{id}/verify"),
            &[("csrf", &csrf), ("code", &new)],
        )
        .await;
    assert_eq!(
        (s, h[header::LOCATION].to_str().unwrap()),
        (
            StatusCode::SEE_OTHER,
            format!("{RETURN}?session={id}").as_str()
        )
    );
}

/// The key's resends spent: the page says that no more codes can come and that the last
/// one is the one to use — not "wait and try again" — and the last code still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_resends_are_spent_says_to_use_the_last_code() {
    let (app, sk) = hosted_app_with(RETURN, |s| s.otp.max_resends = 1).await;
    let (id, _) = open_session(
        &app,
        &sk,
        json!({"return_url": RETURN, "email": "ada@example.com", "locale": "de"}),
    )
    .await;
    let (mut b, csrf) = on_the_page(&app, &id).await;
    let send = format!("/h/{id}/send");
    // A browser without the page's cookie is told so in the session's language.
    let (s, _, html) = Browser::new(&app).post(&send, &[("csrf", &csrf)]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        html.contains("<html lang=\"de\"") && html.contains("Dieses Formular ist abgelaufen"),
        "{html}"
    );
    for n in 1..=2 {
        assert_eq!(
            b.post(&send, &[("csrf", &csrf)]).await.0,
            StatusCode::SEE_OTHER
        );
        app.smtp.wait_for("ada@example.com", n).await;
        // The button for a new code stays only while one can still be sent.
        let (_, _, html) = b.get(&format!("/h/{id}")).await;
        assert_eq!(html.contains("Neuen Code senden"), n == 1, "{html}");
        // In its place, that the last code is the one to use.
        assert_eq!(html.contains("keine weiteren Codes"), n == 2, "{html}");
    }
    let (s, _, html) = b.post(&send, &[("csrf", &csrf)]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{html}");
    assert!(
        html.contains("keine weiteren Codes") && !html.contains("Bitte warten Sie"),
        "{html}"
    );
    assert!(!html.contains("Neuen Code senden"), "{html}");
    assert!(html.contains("name=\"code\""), "{html}");
    assert_eq!(app.smtp.count_to("ada@example.com"), 2);
    let last = app.smtp.wait_for("ada@example.com", 2).await.code();
    // A wrong code then: its error, and still the note to use the last code, both read
    // with the field.
    let wrong = if last == "000000" { "111111" } else { "000000" };
    let (s, _, html) = b
        .post(
            &format!("/h/{id}/verify"),
            &[("csrf", &csrf), ("code", wrong)],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        html.contains("keine weiteren Codes")
            && html.contains("aria-invalid=\"true\" aria-describedby=\"error lead note\""),
        "{html}"
    );
    let (s, h, _) = b
        .post(
            &format!("/h/{id}/verify"),
            &[("csrf", &csrf), ("code", &last)],
        )
        .await;
    assert_eq!(
        (s, h[header::LOCATION].to_str().unwrap()),
        (
            StatusCode::SEE_OTHER,
            format!("{RETURN}?session={id}").as_str()
        )
    );
}

/// An address on the tenant's suppression list: the page says codes cannot be sent to it
/// (422), not "try again in a moment", and sends nothing (API.md §16.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppressed_address_is_told_it_cannot_get_codes_not_to_try_again() {
    let (app, sk) = hosted_app(RETURN).await;
    let add = json!({"recipient": "ada@example.com", "reason": "manual"});
    let r = app.post("/v1/tenant/suppressions", &sk, add).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (id, _) = open_session(
        &app,
        &sk,
        json!({"return_url": RETURN, "email": "ada@example.com", "locale": "de"}),
    )
    .await;
    let (mut b, csrf) = on_the_page(&app, &id).await;
    let (s, _, html) = b.post(&format!("/h/{id}/send"), &[("csrf", &csrf)]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        html.contains("An diese Adresse können keine Codes gesendet werden")
            && !html.contains("noch einmal"),
        "{html}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(app.smtp.messages().is_empty(), "nothing sent");

    // An address suppressed after its first code (a hard bounce, say): "send a new code" on
    // the code's page is refused, and the code's field is not called invalid — the error
    // is about the address, not a code typed.
    let (id, _) = open_session(
        &app,
        &sk,
        json!({"return_url": RETURN, "email": "bob@example.com"}),
    )
    .await;
    let (mut b, csrf) = on_the_page(&app, &id).await;
    let (s, _, _) = b.post(&format!("/h/{id}/send"), &[("csrf", &csrf)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    app.smtp.wait_for("bob@example.com", 1).await;
    let add = json!({"recipient": "bob@example.com", "reason": "manual"});
    let r = app.post("/v1/tenant/suppressions", &sk, add).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (s, _, html) = b.post(&format!("/h/{id}/send"), &[("csrf", &csrf)]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        html.contains("Codes cannot be sent to this address.")
            && html.contains("name=\"code\"")
            && !html.contains("aria-invalid"),
        "{html}"
    );
}

/// A double click on "send" mints one code: the second send waits for the first, then
/// sends another code under the same key (or meets the cooldown) — so the first code
/// received verifies on the page. (Before, both minted; the second superseded the first,
/// and the first code the person received was refused and cost an attempt.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_click_on_send_mints_once_and_the_first_code_verifies() {
    let (app, sk) = hosted_app("https://app.example.com").await;
    for round in 0..3 {
        let mut sessions = Vec::new();
        for i in 0..2 {
            let to = format!("dbl{round}-{i}@example.com");
            let (id, _) = open_session(&app, &sk, json!({"return_url": RETURN, "email": to})).await;
            let (b, csrf) = on_the_page(&app, &id).await;
            sessions.push((id, to, b, csrf));
        }
        app.smtp.hold();
        let mut clicks = Vec::new();
        for (id, _, b, csrf) in &sessions {
            for _ in 0..2 {
                clicks.push(click_send(b, &b.base, id, csrf));
            }
        }
        // One send of each session at DATA; its second click waits for it.
        held_at_data(&app, 2).await;
        app.smtp.release();
        sent_or_told_to_wait(clicks).await;
        for (id, to, mut b, csrf) in sessions {
            first_code_verifies(&app, &mut b, &id, &csrf, &to).await;
        }
    }
}

/// Over two instances on one database (API.md §7), a double click whose two sends reach
/// both instances mints once too: the second waits for the first one's lease, then sends
/// under the same key (or meets the cooldown). PostgreSQL only (instances share it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_click_over_two_instances_mints_once() {
    if !on_postgres() {
        eprintln!("skipped on SQLite: several instances share a PostgreSQL database");
        return;
    }
    let (app, sk) = hosted_app("https://app.example.com").await;
    let other = start(
        app.settings.clone(),
        crate::smtp::SmtpServer::start().await,
        tempfile::tempdir().unwrap(),
        app.clock.clone(),
    )
    .await;
    let to = "two@example.com";
    let (id, _) = open_session(&app, &sk, json!({"return_url": RETURN, "email": to})).await;
    let (mut b, csrf) = on_the_page(&app, &id).await;
    app.smtp.hold();
    let clicks = vec![
        click_send(&b, &app.addr, &id, &csrf),
        click_send(&b, &other.addr, &id, &csrf),
    ];
    held_at_data(&app, 1).await;
    app.smtp.release();
    sent_or_told_to_wait(clicks).await;
    first_code_verifies(&app, &mut b, &id, &csrf, to).await;
}

type Click = tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>;

/// A click on the page's "send" of session `id`, sent to the server at `base`.
fn click_send(b: &Browser, base: &str, id: &str, csrf: &str) -> Click {
    let r =
        b.c.post(format!("{base}/h/{id}/send"))
            .header(header::COOKIE, b.cookie.clone().unwrap())
            .form(&[("csrf", csrf)])
            .send();
    tokio::spawn(r)
}

/// `n` sends reach the relay's DATA (held there) and no other comes after them.
async fn held_at_data(app: &TestApp, n: usize) {
    for _ in 0..200 {
        if app.smtp.in_data() == n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(app.smtp.in_data(), n, "one send of a session at a time");
}

/// Every click sent its code (303) or was told to wait for the cooldown (429).
async fn sent_or_told_to_wait(clicks: Vec<Click>) {
    for c in clicks {
        let s = c.await.unwrap().unwrap().status();
        assert!(
            [StatusCode::SEE_OTHER, StatusCode::TOO_MANY_REQUESTS].contains(&s),
            "{s}"
        );
    }
}

/// One or two codes reached `to`, and the first verifies on the page.
async fn first_code_verifies(app: &TestApp, b: &mut Browser, id: &str, csrf: &str, to: &str) {
    app.smtp.wait_for(to, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let codes: Vec<String> = app
        .smtp
        .messages()
        .into_iter()
        .filter(|m| m.to.iter().any(|t| t == to))
        .map(|m| m.code())
        .collect();
    assert!((1..=2).contains(&codes.len()), "{to}: {codes:?}");
    let (s, _, html) = b
        .post(
            &format!("/h/{id}/verify"),
            &[("csrf", csrf), ("code", &codes[0])],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{to}: the first code {html}");
}
