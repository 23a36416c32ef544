//! Hosted verification pages (API.md §14.1) over plain HTTP: every rule of the pages (CSP,
//! CSRF, the flow, errors announced, branding) and the tenant's view of a session.

use reqwest::header;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::claims::claim;
use crate::helpers::*;

pub(crate) const RETURN: &str = "https://app.example.com/back";

pub(crate) async fn hosted_app(return_prefix: &str) -> (TestApp, String) {
    hosted_app_with(return_prefix, |_| {}).await
}

/// [`hosted_app`], with `tweak` applied to its settings too.
pub(crate) async fn hosted_app_with(
    return_prefix: &str,
    tweak: impl FnOnce(&mut otpmint::config::Settings),
) -> (TestApp, String) {
    let app = spawn_app_with(|s| {
        s.server.public_url = "http://localhost:8080".into();
        tweak(s);
    })
    .await;
    let (_, sk) = app.tenant().await;
    let r = app
        .patch(
            "/v1/tenant",
            &sk,
            json!({ "allowed_return_urls": [return_prefix] }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    (app, sk)
}

pub(crate) async fn open_session(app: &TestApp, sk: &str, body_: Value) -> (String, Value) {
    let r = app.post("/v1/tenant/hosted-sessions", sk, body_).await;
    // The id is the bearer of the session's page: no cache keeps it.
    let cache = r.headers().get(header::CACHE_CONTROL).cloned();
    let (s, v) = body(r).await;
    assert_eq!(
        cache.as_ref().and_then(|c| c.to_str().ok()),
        Some("no-store"),
        "{v}"
    );
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (v["id"].as_str().unwrap().to_string(), v)
}

/// A browser-like client: keeps cookies, follows no redirects, sends fetch metadata (as
/// browsers do to a loopback host, which they treat as secure).
pub(crate) struct Browser {
    c: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

/// A fresh browser on a session's page, with the page's CSRF token.
pub(crate) async fn on_the_page(app: &TestApp, id: &str) -> (Browser, String) {
    let mut b = Browser::new(app);
    let (_, _, html) = b.get(&format!("/h/{id}")).await;
    let csrf = attr(&html, "name=\"csrf\" value=\"").to_string();
    (b, csrf)
}

impl Browser {
    pub(crate) fn new(app: &TestApp) -> Browser {
        Browser {
            c: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .default_headers(reqwest::header::HeaderMap::from_iter([
                    (
                        header::HeaderName::from_static("sec-fetch-site"),
                        header::HeaderValue::from_static("same-origin"),
                    ),
                    (
                        header::HeaderName::from_static("sec-fetch-mode"),
                        header::HeaderValue::from_static("navigate"),
                    ),
                ]))
                .build()
                .unwrap(),
            base: app.addr.clone(),
            cookie: None,
        }
    }

    fn keep(&mut self, r: &reqwest::Response) {
        if let Some(c) = r.headers().get(header::SET_COOKIE) {
            self.cookie = Some(c.to_str().unwrap().split(';').next().unwrap().to_string());
        }
    }

    pub(crate) async fn get(
        &mut self,
        path: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut r = self.c.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            r = r.header(header::COOKIE, c);
        }
        let r = r.send().await.unwrap();
        self.keep(&r);
        (r.status(), r.headers().clone(), r.text().await.unwrap())
    }

    pub(crate) async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut r = self.c.post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = &self.cookie {
            r = r.header(header::COOKIE, c);
        }
        let r = r.send().await.unwrap();
        self.keep(&r);
        (r.status(), r.headers().clone(), r.text().await.unwrap())
    }
}

pub(crate) fn attr<'a>(html: &'a str, marker: &str) -> &'a str {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {html}"))
        + marker.len();
    html[at..].split('"').next().unwrap()
}

/// MiniJinja writes `/` as `&#x2f;` in attributes; a browser reads it back.
pub(crate) fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
}

#[tokio::test]
async fn without_a_public_url_there_are_no_hosted_sessions() {
    let app = spawn_app().await;
    let (_, sk) = app.tenant().await;
    let (s, v) = body(
        app.post(
            "/v1/tenant/hosted-sessions",
            &sk,
            json!({ "return_url": RETURN }),
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
    let r = reqwest::get(format!("{}/h/hs_{}", app.addr, "a".repeat(24)))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Not there at all: another method is 404 too, not a 405 naming methods that 404.
    for (method, path) in [
        (reqwest::Method::PUT, "/l/abc"),
        (reqwest::Method::DELETE, "/pages/style.css"),
        (reqwest::Method::PUT, "/h/hs_x/send"),
    ] {
        let r = app
            .client
            .request(method.clone(), format!("{}{path}", app.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert!(r.headers().get("allow").is_none(), "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_proves_an_address_on_the_pages_and_goes_back_once() {
    let (app, sk) = hosted_app("https://app.example.com").await;
    // An unknown session is a page saying so, as an unknown link is (not bare text).
    let r = reqwest::get(format!("{}/h/hs_{}", app.addr, "b".repeat(24)))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("This link is not valid."));
    // With no session to take a language from, in the one the browser asks for.
    let r = app
        .client
        .get(format!("{}/h/hs_{}", app.addr, "b".repeat(24)))
        .header(header::ACCEPT_LANGUAGE, "xx, de-CH;q=0.9, en;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("<html lang=\"de\">") && html.contains("Dieser Link ist ungültig."),
        "{html}"
    );
    // Bad requests change nothing.
    for (bad, status) in [
        (
            json!({"return_url": "https://evil.example.com/"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"return_url": RETURN, "email": "not an address"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"return_url": RETURN, "locale": "!!"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"return_url": RETURN, "code_challenge_method": "S256"}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, v) = body(
            app.post("/v1/tenant/hosted-sessions", &sk, bad.clone())
                .await,
        )
        .await;
        assert_eq!(s, status, "{bad}: {v}");
    }
    let (id, v) = open_session(&app, &sk, json!({"return_url": RETURN, "purpose": "login"})).await;
    assert!(id.starts_with("hs_"), "{v}");
    assert_eq!(v["url"], format!("http://localhost:8080/h/{id}"));
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    let (s, v) = body(
        app.get(&format!("/v1/tenant/hosted-sessions/{id}"), &sk)
            .await,
    )
    .await;
    assert_eq!((s, &v["status"]), (StatusCode::OK, &json!("open")), "{v}");
    // Another tenant cannot read it.
    let (_, other) = app.tenant().await;
    assert_eq!(
        app.get(&format!("/v1/tenant/hosted-sessions/{id}"), &other)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let mut b = Browser::new(&app);
    // HEAD answers as GET, without the page (API.md §17.8).
    let r = app
        .client
        .head(format!("{}/h/{id}", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.bytes().await.unwrap().is_empty());
    let (s, h, html) = b.get(&format!("/h/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("form-action 'self' https://app.example.com"),
        "{csp}"
    );
    assert!(
        !html.contains("<script") && !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(
        html.contains("<label for=\"email\">") && html.contains("autocomplete=\"email\""),
        "{html}"
    );
    let csrf = attr(&html, "name=\"csrf\" value=\"").to_string();
    let send = unescape(attr(&html, "<form method=\"post\" action=\""));
    // Without the page's token (or its cookie) the form does nothing, and a page says what to
    // do (cookies blocked: the browser never brings one).
    let (s, _, _) = b
        .post(&send, &[("csrf", "forged"), ("email", "ada@example.com")])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let mut stranger = Browser::new(&app);
    let (s, _, html) = stranger
        .post(&send, &[("csrf", &csrf), ("email", "ada@example.com")])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        html.contains("<html lang=\"en\"")
            && html.contains("This form has expired")
            && html.contains("allow cookies"),
        "{html}"
    );
    // A way on that is not a reload (which would post the same form again): the page.
    assert!(
        html.contains(&format!(
            "<a href=\"&#x2f;h&#x2f;{id}\">Open the page again</a>"
        )),
        "{html}"
    );
    // The form's address opened again (a new tab, a restored one) is the page, not a 405;
    // an address that is no session's is the page saying so.
    for form in [send.clone(), format!("/h/{id}/verify")] {
        let (s, h, _) = stranger.get(&form).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{form}");
        assert_eq!(h[header::LOCATION], format!("/h/{id}"));
    }
    for odd in ["/h/%0A/send", "/h/..%2F..%2Fv1/verify"] {
        let (s, h, html) = stranger.get(odd).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{odd}");
        assert!(h.get(header::LOCATION).is_none() && html.contains("This link is not valid."));
    }
    // A code posted before any was sent (only a crafted form can): nothing to verify, and
    // no way out to the app; back to the page, which asks for the address (it was a 410
    // "can no longer be completed", found by a black-box audit: the session is still open).
    let (s, h, _) = b
        .post(
            &format!("/h/{id}/verify"),
            &[("csrf", &csrf), ("code", "123456")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], format!("/h/{id}"));
    let (_, _, html) = b.get(&format!("/h/{id}")).await;
    assert!(html.contains("autocomplete=\"email\""), "{html}");
    assert!(app.smtp.messages().is_empty());
    // A bad address is announced next to its field.
    let (s, _, html) = b.post(&send, &[("csrf", &csrf), ("email", "nope")]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("role=\"alert\"")
            && html.contains("aria-invalid=\"true\" aria-describedby=\"error lead\""),
        "{html}"
    );
    // The code goes out, and the page asks for it.
    let (s, h, _) = b
        .post(&send, &[("csrf", &csrf), ("email", "ada@example.com")])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], format!("/h/{id}"));
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    let (s, _, html) = b.get(&format!("/h/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("autocomplete=\"one-time-code\"") && html.contains("inputmode=\"numeric\""),
        "{html}"
    );
    assert!(
        html.contains("a***@example.com"),
        "the address, masked: {html}"
    );
    let verify = unescape(attr(&html, "<form method=\"post\" action=\""));
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (s, _, html) = b.post(&verify, &[("csrf", &csrf), ("code", wrong)]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("role=\"alert\"") && html.contains(": 4"),
        "attempts left: {html}"
    );
    // Not a code at all: the page says how long one is (no attempt used) — the code's own
    // length, though the tenant's new codes have grown longer since it was sent.
    let (_, me) = body(app.get("/v1/tenant", &sk).await).await;
    let grown = app
        .patch(
            &format!("/v1/tenants/{}", me["id"].as_str().unwrap()),
            ADMIN,
            json!({"policy": {"code_length": 8}}),
        )
        .await;
    assert_eq!(grown.status(), StatusCode::OK);
    let (s, _, html) = b.post(&verify, &[("csrf", &csrf), ("code", "12345")]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("Enter the 6-digit code from the message."),
        "{html}"
    );
    // Typed in groups, with spaces and a hyphen, its first group by a Japanese input
    // method (full-width digits, an ideographic space), it is the same code.
    let wide: String = code[..3]
        .chars()
        .filter_map(|c| char::from_u32(0xFF10 + c.to_digit(10).unwrap()))
        .collect();
    let typed = format!(" {wide}\u{3000}- {} ", &code[3..]);
    let (s, h, _) = b.post(&verify, &[("csrf", &csrf), ("code", &typed)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], format!("{RETURN}?session={id}"));
    let r = app
        .get(&format!("/v1/tenant/hosted-sessions/{id}"), &sk)
        .await;
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    let (s, v) = body(r).await;
    assert_eq!(
        (s, &v["status"], &v["email"]),
        (
            StatusCode::OK,
            &json!("verified"),
            &json!("ada@example.com")
        ),
        "{v}"
    );
    assert!(v["verified_at"].is_string());
    // Once: the page now only sends the person back; the code is used.
    let (s, h, _) = b.get(&format!("/h/{id}")).await;
    assert_eq!(
        (s, h[header::LOCATION].to_str().unwrap()),
        (
            StatusCode::SEE_OTHER,
            format!("{RETURN}?session={id}").as_str()
        )
    );
    // Anyone else — a browser without the cookie of the one that finished — sees that the
    // sign-in is complete, in the session's language, and is sent nowhere (API.md §17.2).
    let mut other = Browser::new(&app);
    let (s, h, html) = other.get(&format!("/h/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.get(header::LOCATION).is_none());
    assert!(html.contains("This sign-in is already complete"), "{html}");
    // No address, no way to the return URL (MiniJinja writes `/` as `&#x2f;`).
    let shown = html.replace("&#x2f;", "/");
    assert!(
        !shown.contains("ada@example.com")
            && !shown.contains("app.example.com")
            && !shown.contains("<a "),
        "{html}"
    );
    // A second submit (a double click) goes back the same way.
    let (s, h, _) = b.post(&verify, &[("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], format!("{RETURN}?session={id}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_address_is_not_asked_for_and_spent_attempts_fail_the_session() {
    let (app, sk) = hosted_app("https://app.example.com").await;
    let (id, _) = open_session(
        &app,
        &sk,
        json!({"return_url": RETURN, "email": "bob@example.com", "locale": "de"}),
    )
    .await;
    let mut b = Browser::new(&app);
    let (_, _, html) = b.get(&format!("/h/{id}")).await;
    assert!(
        html.contains("<html lang=\"de\">") && html.contains("Code senden"),
        "{html}"
    );
    // The title names the app once ("Anmelden bei Acme", not "… · Acme" again).
    let title = html
        .split("<title>")
        .nth(1)
        .and_then(|t| t.split("</title>").next());
    assert_eq!(title.map(|t| t.matches("Acme").count()), Some(1), "{html}");
    assert!(
        !html.contains("name=\"email\""),
        "the address is not asked for: {html}"
    );
    let csrf = attr(&html, "name=\"csrf\" value=\"").to_string();
    let (s, _, _) = b
        .post(
            &format!("/h/{id}/send"),
            &[("csrf", &csrf), ("email", "eve@example.com")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let msg = app.smtp.wait_for("bob@example.com", 1).await;
    assert_eq!(
        app.smtp.count_to("eve@example.com"),
        0,
        "the given address, not the typed one"
    );
    let wrong = if msg.code() == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..5 {
        b.post(
            &format!("/h/{id}/verify"),
            &[("csrf", &csrf), ("code", wrong)],
        )
        .await;
    }
    let (s, v) = body(
        app.get(&format!("/v1/tenant/hosted-sessions/{id}"), &sk)
            .await,
    )
    .await;
    assert_eq!((s, &v["status"]), (StatusCode::OK, &json!("failed")), "{v}");
    let (s, _, html) = b
        .post(
            &format!("/h/{id}/verify"),
            &[("csrf", &csrf), ("code", &msg.code())],
        )
        .await;
    assert_eq!(s, StatusCode::GONE);
    // The page links back to the app, where the person starts again (the app reads the
    // session's status there: failed).
    let back = format!("{RETURN}?session={id}").replace('/', "&#x2f;");
    assert!(
        html.contains(&format!("<a href=\"{back}\">Zurück zu Acme</a>")),
        "{html}"
    );
}

/// A session whose way back the tenant takes off its allowlist (API.md §17.7) cannot be
/// completed: its page says so — not that it expired or failed, which it did not (its
/// status stays `open`) — with no form; a code typed is not checked and none is sent; with
/// the way back allowed again, the same code verifies (found by the security audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_way_back_was_withdrawn_says_so_and_spends_nothing() {
    let (app, sk) = hosted_app("https://app.example.com").await;
    let (id, mut b, csrf, code) = code_sent_on_the_page(&app, &sk).await;
    let allow = |urls: Value| {
        let app = &app;
        let sk = sk.clone();
        async move {
            let (s, v) = body(
                app.patch("/v1/tenant", &sk, json!({ "allowed_return_urls": urls }))
                    .await,
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
    };
    allow(json!(["https://other.example.com"])).await;
    let withdrawn = |html: &str| {
        assert!(
            html.contains("Acme no longer accepts sign-ins from this page")
                && !html.contains("expired or failed")
                && !html.contains("<form"),
            "{html}"
        );
    };
    let (s, _, html) = b.get(&format!("/h/{id}")).await;
    assert_eq!(s, StatusCode::GONE);
    withdrawn(&html);
    let (s, _, html) = b
        .post(
            &format!("/h/{id}/verify"),
            &[("csrf", &csrf), ("code", &code)],
        )
        .await;
    assert_eq!(s, StatusCode::GONE);
    withdrawn(&html);
    let (s, _, html) = b
        .post(&format!("/h/{id}/send"), &[("csrf", &csrf), ("email", "")])
        .await;
    assert_eq!(s, StatusCode::GONE);
    withdrawn(&html);
    let (s, v) = body(
        app.get(&format!("/v1/tenant/hosted-sessions/{id}"), &sk)
            .await,
    )
    .await;
    assert_eq!((s, &v["status"]), (StatusCode::OK, &json!("open")), "{v}");
    assert_eq!(app.smtp.count_to("ada@example.com"), 1, "no code was sent");
    allow(json!(["https://app.example.com"])).await;
    let (s, h, _) = b
        .post(
            &format!("/h/{id}/verify"),
            &[("csrf", &csrf), ("code", &code)],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], format!("{RETURN}?session={id}"));
}

/// A 1×1 PNG.
pub(crate) const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0x60, 0x60, 0xf8,
    0x0f, 0x00, 0x01, 0x04, 0x01, 0x00, 0x5f, 0xe5, 0xc3, 0x4b, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A grey PNG of this size, made by the png crate.
fn png_of(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, width, height);
    e.set_color(png::ColorType::Grayscale);
    e.set_depth(png::BitDepth::Eight);
    let mut w = e.write_header().unwrap();
    w.write_image_data(&vec![128u8; (width * height) as usize])
        .unwrap();
    w.finish().unwrap();
    out
}

/// A 64×1 PNG whose header says 64×64: its chunks and CRCs are valid, its data too short.
fn short_of_data() -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut png = png_of(64, 1);
    // IHDR: length at 8, type at 12, data at 16 (width 16..20, height 20..24), CRC at 29.
    png[20..24].copy_from_slice(&64u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

pub(crate) async fn put_logo(app: &TestApp, sk: &str, ct: &str, bytes: Vec<u8>) -> StatusCode {
    put_logo_answer(app, sk, ct, bytes).await.status()
}

async fn put_logo_answer(app: &TestApp, sk: &str, ct: &str, bytes: Vec<u8>) -> reqwest::Response {
    app.client
        .put(format!("{}/v1/tenant/branding/logo", app.addr))
        .bearer_auth(sk)
        .header(header::CONTENT_TYPE, ct)
        .body(bytes)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_brands_its_pages_with_a_colour_and_a_logo() {
    let (app, sk) = hosted_app("https://app.example.com").await;
    let (id, sk_id) = (
        body(app.get("/v1/tenant", &sk).await).await.1["id"]
            .as_str()
            .unwrap()
            .to_string(),
        sk.clone(),
    );
    let (s, v) = body(
        app.patch("/v1/tenant", &sk, json!({"branding": {"color": "red"}}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = body(
        app.patch("/v1/tenant", &sk, json!({"branding": {"color": "#FFD700"}}))
            .await,
    )
    .await;
    assert_eq!(
        (s, &v["branding"]["color"]),
        (StatusCode::OK, &json!("#ffd700")),
        "{v}"
    );
    let css = reqwest::get(format!("{}/pages/brand/{id}.css", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Dark text on a light colour keeps the contrast.
    assert!(
        css.contains("--brand: #ffd700")
            && css.contains("--brand-text: #000000")
            && css.contains("--brand-edge: #1a1a1a"),
        "{css}"
    );
    // `null` goes back to the default, as `{"color": null}` does; then the colour again.
    for reset in [
        json!({"branding": null}),
        json!({"branding": {"color": null}}),
    ] {
        let (s, v) = body(app.patch("/v1/tenant", &sk, reset.clone()).await).await;
        assert_eq!(
            (s, &v["branding"]["color"]),
            (StatusCode::OK, &Value::Null),
            "{reset}: {v}"
        );
        let (s, v) = body(
            app.patch("/v1/tenant", &sk, json!({"branding": {"color": "#FFD700"}}))
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    assert_eq!(
        put_logo(&app, &sk_id, "image/gif", PNG.to_vec()).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    // Decoded, not only sniffed (API.md §17.8): a PNG's header with nothing that decodes
    // behind it, and a PNG over 1024×1024 pixels, are 422 logo_invalid.
    assert_eq!(
        put_logo(&app, &sk_id, "image/png", b"GIF89a not a png".to_vec()).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let mut truncated = PNG[..40].to_vec();
    truncated.extend_from_slice(&[0u8; 40]);
    assert_eq!(
        put_logo(&app, &sk_id, "image/png", truncated).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        put_logo(&app, &sk_id, "image/png", png_of(1025, 1)).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // Every chunk intact (CRCs right) but less image data than the header promises.
    assert_eq!(
        put_logo(&app, &sk_id, "image/png", short_of_data()).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // Bytes behind IEND (a decoder never reads them; they would be stored and served).
    let mut trailing = PNG.to_vec();
    trailing.extend_from_slice(b"<script>alert(1)</script>");
    assert_eq!(
        put_logo(&app, &sk_id, "image/png", trailing).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        put_logo(&app, &sk_id, "image/png", png_of(1024, 1024)).await,
        StatusCode::NO_CONTENT
    );
    let mut big = PNG.to_vec();
    big.resize(64 * 1024 + 1, 0);
    assert_eq!(
        put_logo(&app, &sk_id, "image/png", big.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // The refusals say this route's limit and media type.
    let r = put_logo_answer(&app, &sk_id, "image/png", big).await;
    let v: Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("64 KiB"), "{v}");
    let r = put_logo_answer(&app, &sk_id, "image/jpeg", PNG.to_vec()).await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v: Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("image/png"), "{v}");
    assert_eq!(
        put_logo(&app, &sk_id, "image/png", PNG.to_vec()).await,
        StatusCode::NO_CONTENT
    );
    let r = reqwest::get(format!("{}/pages/logo/{id}.png", app.addr))
        .await
        .unwrap();
    assert_eq!(r.headers()[header::CONTENT_TYPE], "image/png");
    assert_eq!(r.bytes().await.unwrap().as_ref(), PNG);

    let (hs, _) = open_session(&app, &sk, json!({ "return_url": RETURN })).await;
    let html = reqwest::get(format!("{}/h/{hs}", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(&format!("pages&#x2f;logo&#x2f;{id}.png"))
            || html.contains(&format!("/pages/logo/{id}.png")),
        "{html}"
    );
    assert!(html.contains(&format!("/pages/brand/{id}.css")), "{html}");
    // A disabled tenant's brand assets answer 404; enabled again, they are back.
    for enabled in [false, true] {
        let r = app
            .patch(
                &format!("/v1/tenants/{id}"),
                ADMIN,
                json!({"enabled": enabled}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let want = if enabled {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        for asset in [format!("logo/{id}.png"), format!("brand/{id}.css")] {
            let r = reqwest::get(format!("{}/pages/{asset}", app.addr))
                .await
                .unwrap();
            assert_eq!(r.status(), want, "{asset} enabled={enabled}");
        }
    }
    let r = app
        .client
        .delete(format!("{}/v1/tenant/branding/logo", app.addr))
        .bearer_auth(&sk)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = reqwest::get(format!("{}/pages/logo/{id}.png", app.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

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

/// A session for ada@example.com, a browser on its page that had the code sent, and the
/// code: (session id, browser, CSRF token, code).
async fn code_sent_on_the_page(app: &TestApp, sk: &str) -> (String, Browser, String, String) {
    let (id, _) = open_session(
        app,
        sk,
        json!({"return_url": RETURN, "email": "ada@example.com"}),
    )
    .await;
    let (mut b, csrf) = on_the_page(app, &id).await;
    let send = format!("/h/{id}/send");
    assert_eq!(
        b.post(&send, &[("csrf", &csrf)]).await.0,
        StatusCode::SEE_OTHER
    );
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    (id, b, csrf, code)
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
