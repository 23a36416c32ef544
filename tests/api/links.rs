//! Magic links (API.md §14.2): a GET changes nothing, a POST with the page's CSRF token
//! verifies the key once and redirects; without `server.public_url` links are off.

use reqwest::header;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const RETURN: &str = "https://app.example.com/signed-in";

async fn linked_app() -> (TestApp, String) {
    let app = spawn_app_with(|s| s.server.public_url = "http://localhost:8080/".into()).await;
    let (_, sk) = app.tenant().await;
    let (s, v) = body(
        app.patch(
            "/v1/tenant",
            &sk,
            json!({"allowed_return_urls": ["https://app.example.com"]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["allowed_return_urls"], json!(["https://app.example.com"]));
    (app, sk)
}

/// Mint with a link; the key and the link's token, read out of the message.
async fn mint_link(app: &TestApp, sk: &str, to: &str) -> (String, String, String) {
    let (s, v) = body(
        app.post(
            "/v1/otp",
            sk,
            json!({"email": to, "link": {"return_url": format!("{RETURN}?from=mail")}}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    let msg = app.smtp.wait_for(to, 1).await;
    let text = msg.text().unwrap();
    let at = text
        .find("http://localhost:8080/l/")
        .expect("the link in the text");
    let token: String = text[at + "http://localhost:8080/l/".len()..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    // The HTML has it as the href of the button, as it is (no `&#x2f;`).
    assert!(
        msg.html()
            .unwrap()
            .contains(&format!("href=\"http://localhost:8080/l/{token}\"")),
        "the link in the HTML"
    );
    (key, token, msg.code())
}

/// The page a verified link shows anyone but the browser that confirmed it: the sign-in is
/// complete, no redirect, no key (API.md §17.2).
async fn assert_done(r: reqwest::Response) {
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get(header::LOCATION).is_none());
    let html = r.text().await.unwrap();
    assert!(html.contains("This sign-in is already complete"), "{html}");
    assert!(!html.contains("otp_") && !html.contains(RETURN), "{html}");
}

async fn status(app: &TestApp, sk: &str, key: &str) -> Value {
    body(app.get(&format!("/v1/otp/{key}"), sk).await).await.1
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// GET the page: its cookie and the form's CSRF token.
async fn open(app: &TestApp, token: &str) -> (String, String) {
    let r = no_redirects()
        .get(format!("{}/l/{token}", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        csp.contains("form-action 'self' https://app.example.com"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    let cookie = r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_string();
    let html = r.text().await.unwrap();
    assert!(!html.contains("<script"), "no JavaScript");
    // The tab names the app it is for.
    assert!(html.contains(" · Acme</title>"), "{html}");
    let at = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf = html[at..].split('"').next().unwrap().to_string();
    (cookie, csrf)
}

/// GET the link's page (with the browser's cookie, if any), redirects not followed.
async fn get_page(app: &TestApp, token: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut r = no_redirects().get(format!("{}/l/{token}", app.addr));
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.send().await.unwrap()
}

async fn post(app: &TestApp, token: &str, cookie: Option<&str>, csrf: &str) -> reqwest::Response {
    let mut r = no_redirects()
        .post(format!("{}/l/{token}", app.addr))
        .form(&[("csrf", csrf)]);
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn without_a_public_url_links_are_refused_and_their_pages_are_not_there() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
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
        (s, &v["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("links_not_configured")
        ),
        "{v}"
    );
    assert!(app.smtp.messages().is_empty());
    // The pages' paths answer as paths the server does not have: a problem document.
    let (id, _) = app.tenant().await;
    for path in [
        format!("/l/{}", "a".repeat(32)),
        "/h/hs_abcdefghijklmnopqrstuvwx".to_string(),
        "/pages/style.css".to_string(),
        "/pages/icon.svg".to_string(),
        format!("/pages/brand/{id}.css"),
        format!("/pages/logo/{id}.png"),
    ] {
        let r = no_redirects()
            .get(format!("{}{path}", app.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let ct = r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(ct, "application/problem+json", "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "not_found", "{path}");
    }
}

#[tokio::test]
async fn return_urls_are_allowlisted_prefixes() {
    let (app, sk) = linked_app().await;
    for bad in [
        json!(["http://app.example.com"]),
        json!(["not a url"]),
        json!(["https://app.example.com/#x"]),
        // compared as written, these would allow only themselves: refused, said why
        json!(["https://*.example.com"]),
        json!(["https://app.example.com/auth?x="]),
    ] {
        let (s, v) = body(
            app.patch("/v1/tenant", &sk, json!({ "allowed_return_urls": bad }))
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(v.to_string().contains("allowed_return_urls[0]"), "{v}");
    }
    for (link, field) in [
        (
            json!({"return_url": "https://app.example.com.evil.test/"}),
            "link.return_url",
        ),
        (
            json!({"return_url": "https://other.example.com/"}),
            "link.return_url",
        ),
    ] {
        let (s, v) = body(
            app.post(
                "/v1/otp",
                &sk,
                json!({"email": "ada@example.com", "link": link}),
            )
            .await,
        )
        .await;
        // Well-formed, but not one of the tenant's: a rule of its state (API.md §18.5).
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["code"], "unprocessable", "{v}");
        assert!(v.to_string().contains(field), "{v}");
    }
    assert!(app.smtp.messages().is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_link_changes_nothing_and_its_button_verifies_once() {
    let (app, sk) = linked_app().await;
    let (key, token, code) = mint_link(&app, &sk, "ada@example.com").await;
    // A scanner (or the person) opens it, twice: still pending.
    let (cookie, csrf) = open(&app, &token).await;
    let (other_cookie, other_csrf) = open(&app, &token).await;
    assert_eq!(status(&app, &sk, &key).await["status"], "pending");
    // A form from elsewhere has neither the cookie nor the token. The page says so — not
    // that the link ended: it still works — and links to the link's page again.
    let r = post(&app, &token, None, &csrf).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let html = r.text().await.unwrap().replace("&#x2f;", "/");
    assert!(
        html.contains("This form has expired")
            && !html.contains("can no longer be used")
            && html.contains(&format!("<a href=\"/l/{token}\">Open the page again</a>")),
        "{html}"
    );
    assert_eq!(
        post(&app, &token, Some(&cookie), "forged").await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(&app, &token, Some("__Host-otpmint_link=another"), &csrf)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(status(&app, &sk, &key).await["status"], "pending");
    // The button: verified, and back to the tenant's page.
    let r = post(&app, &token, Some(&cookie), &csrf).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[header::LOCATION].to_str().unwrap(),
        format!("{RETURN}?from=mail&key={key}&status=verified")
    );
    let st = status(&app, &sk, &key).await;
    assert_eq!(
        (&st["status"], &st["verified_via"]),
        (&json!("verified"), &json!("link")),
        "{st}"
    );
    // Once: a second click, or opening the link again, sends the browser that confirmed it
    // back the same way without verifying again (API.md §17.2).
    let back = format!("{RETURN}?from=mail&key={key}&status=verified");
    let r = post(&app, &token, Some(&cookie), &csrf).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION].to_str().unwrap(), back);
    let r = get_page(&app, &token, Some(&cookie)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION].to_str().unwrap(), back);
    // Anyone else — no cookie, or another browser that opened the page before the click,
    // with its own valid form — is told the sign-in is complete and sent nowhere.
    assert_done(get_page(&app, &token, None).await).await;
    assert_done(post(&app, &token, None, &csrf).await).await;
    assert_done(post(&app, &token, Some(&other_cookie), &other_csrf).await).await;
    assert_done(get_page(&app, &token, Some(&other_cookie)).await).await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::GONE);

    // The code first: then the link has nothing to confirm, and sends nobody back.
    let (key, token, code) = mint_link(&app, &sk, "bob@example.com").await;
    let (cookie, csrf) = open(&app, &token).await;
    assert_eq!(app.verify(&sk, &key, &code).await.0, StatusCode::OK);
    assert_eq!(status(&app, &sk, &key).await["verified_via"], "code");
    assert_done(get_page(&app, &token, None).await).await;
    assert_done(post(&app, &token, Some(&cookie), &csrf).await).await;
    // An unknown token.
    let r = no_redirects()
        .get(format!("{}/l/{}", app.addr, "Z".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// The pages name their own icon, which otpmint serves: a browser then never asks the host
/// for `/favicon.ico` (a 404 in the log at every page view, found by an audit).
#[tokio::test]
async fn the_pages_name_an_icon_otpmint_serves() {
    let (app, sk) = linked_app().await;
    let (_, token, _) = mint_link(&app, &sk, "ada@example.com").await;
    let html = get_page(&app, &token, None)
        .await
        .text()
        .await
        .unwrap()
        .replace("&#x2f;", "/");
    assert!(
        html.contains(r#"<link rel="icon" href="/pages/icon.svg" type="image/svg+xml">"#),
        "{html}"
    );
    let r = reqwest::get(format!("{}/pages/icon.svg", app.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "image/svg+xml");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h[header::CONTENT_SECURITY_POLICY], "default-src 'none'");
    let svg = r.text().await.unwrap();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert!(!svg.contains("<script"), "{svg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_confirms_verify_once() {
    let (app, sk) = linked_app().await;
    let (key, token, _) = mint_link(&app, &sk, "ada@example.com").await;
    let (cookie, csrf) = open(&app, &token).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (url, cookie, csrf) = (
            format!("{}/l/{token}", app.addr),
            cookie.clone(),
            csrf.clone(),
        );
        tasks.push(tokio::spawn(async move {
            no_redirects()
                .post(url)
                .header(header::COOKIE, cookie)
                .form(&[("csrf", csrf)])
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    // Every click goes back to the tenant (or finds the key used); the key was verified once.
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SEE_OTHER || *s == StatusCode::GONE),
        "{statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::SEE_OTHER));
    assert_eq!(status(&app, &sk, &key).await["verified_via"], "link");
    let v = body(app.get("/v1/tenant/stats", &sk).await).await.1;
    let verified: i64 = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["verified"].as_i64().unwrap())
        .sum();
    assert_eq!(verified, 1, "{v}");
}

/// A click that races the code being typed: whichever wins, the code is verified once,
/// and a click that lost is told the sign-in is complete — never that the link can no
/// longer be used (API.md §17.2), though the verifies under way held the code's attempts
/// when the click came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_that_loses_to_the_code_is_told_the_sign_in_is_complete() {
    let (app, sk) = linked_app().await;
    for round in 0..4 {
        let to = format!("race{round}@example.com");
        let (key, token, code) = mint_link(&app, &sk, &to).await;
        let (cookie, csrf) = open(&app, &token).await;
        let click = {
            let (url, cookie, csrf) = (format!("{}/l/{token}", app.addr), cookie, csrf);
            tokio::spawn(async move {
                let r = no_redirects()
                    .post(url)
                    .header(header::COOKIE, cookie)
                    .form(&[("csrf", csrf)])
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.text().await.unwrap())
            })
        };
        let verifies = (0..5).map(|_| app.verify(&sk, &key, &code));
        let verified = futures_util::future::join_all(verifies)
            .await
            .into_iter()
            .filter(|(s, _)| *s == StatusCode::OK)
            .count();
        let (s, page) = click.await.unwrap();
        match s {
            StatusCode::SEE_OTHER => assert_eq!(verified, 0, "the link won"),
            StatusCode::OK => {
                assert_eq!(verified, 1, "the code won");
                assert!(page.contains("This sign-in is already complete"), "{page}");
            }
            other => panic!("round {round}: the click answered {other}: {page}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_does_not_verify_a_key_whose_attempts_are_spent() {
    let (app, sk) = linked_app().await;
    let (key, token, code) = mint_link(&app, &sk, "ada@example.com").await;
    let (cookie, csrf) = open(&app, &token).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        app.verify(&sk, &key, wrong).await;
    }
    let r = post(&app, &token, Some(&cookie), &csrf).await;
    assert_eq!(r.status(), StatusCode::GONE);
    // Its page names the app, in its title and its words, as the link's other pages do.
    let title = "<title>This link can no longer be used · Acme</title>";
    let html = r.text().await.unwrap();
    assert!(html.contains(title), "{html}");
    let r = no_redirects()
        .get(format!("{}/l/{token}", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::GONE);
    let html = r.text().await.unwrap();
    assert!(html.contains(title) && html.contains("Acme"), "{html}");
    assert_eq!(status(&app, &sk, &key).await["status"], "exhausted");
}

/// The pages' CSRF cookie is always one the server chose, under a `__Host-` name (API.md
/// §17.5): a value the browser brings that the server did not issue is replaced, and a form
/// posted with it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_cookie_is_a_host_cookie_the_server_chose() {
    let (app, sk) = linked_app().await;
    let (key, token, _) = mint_link(&app, &sk, "fix@example.com").await;
    let get = |cookie: Option<String>| {
        let mut r = no_redirects().get(format!("{}/l/{token}", app.addr));
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        async move {
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let set = r.headers()[header::SET_COOKIE]
                .to_str()
                .unwrap()
                .to_string();
            let html = r.text().await.unwrap();
            let at = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
            (set, html[at..].split('"').next().unwrap().to_string())
        }
    };
    let (set, _) = get(None).await;
    assert!(set.starts_with("__Host-otpmint_link="), "{set}");
    assert!(set.contains("; Path=/;"), "{set}");
    assert!(!set.contains("Domain="), "{set}");
    // public_url is plain http (on loopback): a client that is no browser gets a cookie it
    // can send back over http …
    assert!(!set.contains("Secure"), "{set}");
    // … and a browser (it sends fetch metadata only to hosts it treats as secure, where it
    // refuses a __Host- cookie without Secure) gets a Secure one.
    let r = no_redirects()
        .get(format!("{}/l/{token}", app.addr))
        .header("sec-fetch-site", "none")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    let browser = r.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(browser.contains("; Secure"), "{browser}");
    let issued = set.split(';').next().unwrap().to_string();
    // The server's own cookie is kept.
    let (again, _) = get(Some(issued.clone())).await;
    assert_eq!(again.split(';').next().unwrap(), issued);
    // A value an attacker planted is replaced by a new one the server chose …
    let planted = "__Host-otpmint_link=attacker-chosen-value".to_string();
    let (replaced, csrf) = get(Some(planted.clone())).await;
    let fresh = replaced.split(';').next().unwrap().to_string();
    assert_ne!(fresh, planted);
    assert_ne!(fresh, issued);
    // … and a form posted with the planted value does nothing, even with the page's token.
    let r = post(&app, &token, Some(&planted), &csrf).await;
    assert_ne!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(status(&app, &sk, &key).await["status"], "pending");
    // With the cookie the page set, it verifies.
    let r = post(&app, &token, Some(&fresh), &csrf).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(status(&app, &sk, &key).await["status"], "verified");
}

/// A return URL goes back byte for byte apart from the parameters otpmint adds, and the
/// tenant's allowlist is checked again when the page redirects (API.md §17.7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_return_url_is_kept_as_given_and_checked_again_at_the_redirect() {
    let (app, sk) = linked_app().await;
    let given = "https://APP.example.com/cb?b=%20x&c&d=e+f&k%65y=planted";
    let (s, v) = body(
        app.post(
            "/v1/otp",
            &sk,
            json!({"email": "raw@example.com", "link": {"return_url": given}}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["shareable_key"].as_str().unwrap().to_string();
    let text = app
        .smtp
        .wait_for("raw@example.com", 1)
        .await
        .text()
        .unwrap();
    let at = text.find("http://localhost:8080/l/").unwrap() + "http://localhost:8080/l/".len();
    let token: String = text[at..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    let (cookie, csrf) = open(&app, &token).await;
    let r = post(&app, &token, Some(&cookie), &csrf).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[header::LOCATION].to_str().unwrap(),
        format!("https://APP.example.com/cb?b=%20x&c&d=e+f&key={key}&status=verified")
    );

    // Another link, its page open; the tenant takes its return URL off the list before it is
    // used.
    let (key2, token2, _) = mint_link(&app, &sk, "late@example.com").await;
    let (cookie, csrf) = open(&app, &token2).await;
    let (s, _) = body(
        app.patch(
            "/v1/tenant",
            &sk,
            json!({"allowed_return_urls": ["https://other.example.com"]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Its page's form, and the page opened again, say the app no longer takes sign-ins from
    // here (not that the link is broken); the page has no form.
    let r = post(&app, &token2, Some(&cookie), &csrf).await;
    assert_eq!(r.status(), StatusCode::GONE);
    assert!(r.headers().get(header::LOCATION).is_none());
    let html = r.text().await.unwrap();
    assert!(
        html.contains("no longer accepts sign-ins from this page"),
        "{html}"
    );
    let r = app.get(&format!("/l/{token2}"), "").await;
    assert_eq!(r.status(), StatusCode::GONE);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("no longer accepts sign-ins from this page") && !html.contains("<form"),
        "{html}"
    );
    // Checked before the key is spent: it is still pending.
    assert_eq!(status(&app, &sk, &key2).await["status"], "pending");
}

/// The allowlist is shown as given and compared normalised; a page's plain-text answer
/// carries the pages' security headers (API.md §17.7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_is_compared_normalised_and_plain_page_answers_carry_a_csp() {
    let (app, sk) = linked_app().await;
    let given = "HTTPS://App.Example.com:443/x/./y";
    let (s, v) = body(
        app.patch("/v1/tenant", &sk, json!({"allowed_return_urls": [given]}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["allowed_return_urls"], json!([given]), "{v}");
    let (s, v) = body(
        app.post(
            "/v1/otp",
            &sk,
            json!({"email": "n@example.com", "link": {"return_url": "https://app.example.com/x/y/done"}}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let r = no_redirects()
        .get(format!("{}/h/hs_doesnotexist", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
}

#[tokio::test]
async fn the_confirm_page_wears_the_tenants_colour_and_logo_as_its_hosted_pages_do() {
    let (app, sk) = linked_app().await;
    let page = |token: String| {
        let app = &app;
        async move {
            let r = no_redirects()
                .get(format!("{}/l/{token}", app.addr))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.text().await.unwrap().replace("&#x2f;", "/")
        }
    };
    let (_, token, _) = mint_link(&app, &sk, "ada@example.com").await;
    assert!(!page(token).await.contains("/pages/brand/"));
    let (s, v) = body(
        app.patch("/v1/tenant", &sk, json!({"branding": {"color": "#FFD700"}}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (_, token, _) = mint_link(&app, &sk, "bob@example.com").await;
    let html = page(token).await;
    let href = format!("/pages/brand/{id}.css");
    assert!(html.contains(&href), "{html}");
    let css = reqwest::get(format!("{}{href}", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(css.contains("--brand: #ffd700"), "{css}");
    // No logo yet; with one, the page shows it, named by the app.
    assert!(!html.contains("/pages/logo/"), "{html}");
    assert_eq!(
        crate::hosted::put_logo(&app, &sk, "image/png", crate::hosted::PNG.to_vec()).await,
        StatusCode::NO_CONTENT
    );
    let (_, token, _) = mint_link(&app, &sk, "eve@example.com").await;
    let html = page(token).await;
    assert!(
        html.contains(&format!(
            "<img class=\"logo\" src=\"/pages/logo/{id}.png\" alt=\"Acme\">"
        )),
        "{html}"
    );
}

/// A page whose database does not answer says so to the person on it, with 503 and
/// `Retry-After` (API.md §6.24) — not an empty answer — and works again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_answer_a_database_outage_with_a_page_and_retry_after() {
    let Some(base) = postgres_base_url() else {
        eprintln!(
            "skipped on SQLite: only a PostgreSQL database can be taken away from a running server"
        );
        return;
    };
    let (app, sk) = linked_app().await;
    let (_, token, _) = mint_link(&app, &sk, "ada@example.com").await;
    let (session, _) = crate::hosted::open_session(&app, &sk, json!({"return_url": RETURN})).await;
    let name = app.database_name();
    /// Closes the database to connections (and ends those open) while it lives; opens it
    /// again when dropped, also when the test fails (and then without panicking).
    struct Outage(String, String);
    impl Drop for Outage {
        fn drop(&mut self) {
            let (base, name) = (self.0.clone(), self.1.clone());
            let _ = std::thread::spawn(move || {
                if let Ok(mut c) = postgres::Client::connect(&base, postgres::NoTls) {
                    let _ = c.batch_execute(&format!(
                        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"
                    ));
                }
            })
            .join();
        }
    }
    let outage = Outage(base.clone(), name.clone());
    pg_blocking(move || {
        let mut c = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        c.batch_execute(&format!(
            "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"
        ))
        .unwrap();
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&name],
        )
        .unwrap();
    });
    for path in [format!("/l/{token}"), format!("/h/{session}")] {
        let r = no_redirects()
            .get(format!("{}{path}", app.addr))
            .send()
            .await
            .unwrap();
        let (status, retry) = (r.status(), r.headers().get(header::RETRY_AFTER).cloned());
        let text = r.text().await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {text}");
        assert_eq!(retry.unwrap(), "1", "{path}");
        assert!(text.contains("unavailable for a moment"), "{path}: {text}");
    }
    drop(outage);
    // Back: the pool's broken connections are dropped as they are met.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while get_page(&app, &token, None).await.status() != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "the page never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
