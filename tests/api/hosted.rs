//! Hosted verification pages (API.md §14.1) over plain HTTP: the flow from the address to
//! the way back, a given address, a way back withdrawn, branding, and the tenant's view of a
//! session. (Sending codes from the page: hosted_sends.rs; forms, cookies and the store
//! failing under them: hosted_forms.rs; in a real browser: browser.rs.)

use reqwest::header;
use reqwest::StatusCode;
use serde_json::{json, Value};

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
    pub(crate) c: reqwest::Client,
    pub(crate) base: String,
    pub(crate) cookie: Option<String>,
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
    // The heading names the app ("Sign in to …"): the logo beside it is not read out again.
    assert!(
        html.contains(&format!("{id}.png\" alt=\"\">")) && html.contains("<h1>Sign in to "),
        "{html}"
    );
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

/// A session for ada@example.com, a browser on its page that had the code sent, and the
/// code: (session id, browser, CSRF token, code).
pub(crate) async fn code_sent_on_the_page(
    app: &TestApp,
    sk: &str,
) -> (String, Browser, String, String) {
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
