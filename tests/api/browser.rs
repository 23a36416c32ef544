//! The hosted pages and magic links in a real browser (Debian's `chromium` driven through
//! `chromedriver` with fantoccini): the whole flow typed as a person would, once with
//! JavaScript off, ending on the tenant's return URL (Chrome applies the page's CSP
//! `form-action` to the redirect after the POST). The test installs chromium and
//! chromedriver with apt-get when they are missing and it can; otherwise it fails saying
//! how to install them — unless `OTPMINT_BROWSER_TESTS=skip`, which skips it loudly.
//! `OTPMINT_WRITE_SCREENSHOTS=1` writes the pages' screenshots to docs/pages/.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::hosted::open_session;
use crate::tools::apt_tools;
use otpmint::testkit::http::HttpReceiver;

/// chromedriver, in a process group of its own with the browser it starts: dropped (also by
/// a test that panics before its `close`), the whole group is killed, Chromium with it.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(group) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is
            // touched.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver and chromium, installed if need be; `None`: skipped (said loudly).
fn browser_tools() -> Option<()> {
    let ready = apt_tools(
        &["chromedriver", "chromium"],
        &["chromium", "chromium-driver"],
        false,
    );
    if ready {
        return Some(());
    }
    if std::env::var("OTPMINT_BROWSER_TESTS").as_deref() == Ok("skip") {
        eprintln!("\n*** BROWSER TESTS SKIPPED: chromium/chromedriver missing and OTPMINT_BROWSER_TESTS=skip ***\n");
        return None;
    }
    panic!(
        "the browser tests need Debian's chromium and chromium-driver: \
         `apt-get install chromium chromium-driver` (or set OTPMINT_BROWSER_TESTS=skip)"
    );
}

async fn browser(javascript: bool) -> (Driver, Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut prefs = serde_json::Map::new();
    if !javascript {
        prefs.insert(
            "profile.managed_default_content_settings.javascript".into(),
            json!(2),
        );
    }
    let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=720,820", "--lang=en"],
            "prefs": prefs,
        }
    }))
    .unwrap();
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    (driver, client)
}

fn screenshot(name: &str, png: &[u8]) {
    if std::env::var("OTPMINT_WRITE_SCREENSHOTS").as_deref() == Ok("1") {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/pages");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(format!("{dir}/{name}.png"), png).unwrap();
    }
}

/// Click the element `at` finds.
async fn click(c: &Client, at: Locator<'_>) {
    c.find(at).await.unwrap().click().await.unwrap();
}

/// The browser lands on the tenant's page: its URL, once it starts with `prefix`.
async fn landed(c: &Client, prefix: &str) -> String {
    for _ in 0..100 {
        let url = c.current_url().await.unwrap().to_string();
        if url.starts_with(prefix) {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "never reached {prefix}: at {}",
        c.current_url().await.unwrap()
    );
}

async fn sign_in_on_the_pages(javascript: bool, locale: &str, shots: bool) {
    let back = HttpReceiver::start(false).await;
    let app = spawn_app_with(|s| s.server.public_url = "http://localhost:8080".into()).await;
    let (_, sk) = app.tenant().await;
    let r = app
        .patch(
            "/v1/tenant",
            &sk,
            json!({"allowed_return_urls": [back.url("/back")], "branding": {"color": "#0f766e"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (id, _) = open_session(
        &app,
        &sk,
        json!({"return_url": back.url("/back"), "purpose": "login", "locale": locale}),
    )
    .await;
    let (_driver, c) = browser(javascript).await;
    c.goto(&format!("{}/h/{id}", app.addr)).await.unwrap();
    let email = c.wait().for_element(Locator::Id("email")).await.unwrap();
    if shots {
        screenshot(
            &format!("hosted-email-{locale}"),
            &c.screenshot().await.unwrap(),
        );
    }
    email.send_keys("ada@example.com").await.unwrap();
    click(&c, Locator::Css("button[type=submit]")).await;
    let code_box = c.wait().for_element(Locator::Id("code")).await.unwrap();
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    // A wrong code first: the page says so and keeps the form.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    code_box.send_keys(wrong).await.unwrap();
    click(&c, Locator::Css("form button[type=submit]")).await;
    let alert = c
        .wait()
        .for_element(Locator::Css("[role=alert]"))
        .await
        .unwrap();
    assert!(!alert.text().await.unwrap().is_empty());
    if shots {
        screenshot(
            &format!("hosted-code-{locale}"),
            &c.screenshot().await.unwrap(),
        );
    }
    // Typed spaced out, as people copy it from a message (API.md §17.8): the box takes
    // all of it (11 characters for 6 digits).
    let typed = code.chars().map(String::from).collect::<Vec<_>>().join(" ");
    c.find(Locator::Id("code"))
        .await
        .unwrap()
        .send_keys(&typed)
        .await
        .unwrap();
    click(&c, Locator::Css("form button[type=submit]")).await;
    let url = landed(&c, &back.url("/back")).await;
    assert!(url.ends_with(&format!("?session={id}")), "{url}");
    let v: Value = app
        .get(&format!("/v1/tenant/hosted-sessions/{id}"), &sk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "verified", "{v}");
    c.close().await.unwrap();

    // Another browser (a fresh profile: no cookie of the one that finished) sees that the
    // sign-in is complete and is sent nowhere (API.md §17.2).
    let went_back = back.requests().len();
    let (_driver2, other) = browser(javascript).await;
    other.goto(&format!("{}/h/{id}", app.addr)).await.unwrap();
    let page = other
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let here = other.current_url().await.unwrap();
    assert!(here.path().ends_with(&format!("/h/{id}")), "{here}");
    assert!(
        !page.contains("ada@example.com") && !page.is_empty(),
        "{page}"
    );
    assert!(other.find(Locator::Id("email")).await.is_err());
    assert!(other.find(Locator::Id("code")).await.is_err());
    assert_eq!(back.requests().len(), went_back, "nobody else went back");
    other.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_on_the_hosted_pages_in_a_browser() {
    if browser_tools().is_none() {
        return;
    }
    sign_in_on_the_pages(true, "en", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosted_pages_work_with_javascript_off() {
    if browser_tools().is_none() {
        return;
    }
    sign_in_on_the_pages(false, "de", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magic_link_opened_in_a_browser_verifies_after_its_button() {
    if browser_tools().is_none() {
        return;
    }
    let back = HttpReceiver::start(false).await;
    let app = spawn_app_with(|s| s.server.public_url = "http://localhost:8080".into()).await;
    let (_, sk) = app.tenant().await;
    let r = app
        .patch(
            "/v1/tenant",
            &sk,
            json!({"allowed_return_urls": [back.url("/back")]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .post(
            "/v1/otp",
            &sk,
            json!({"email": "ada@example.com", "link": {"return_url": back.url("/back")}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let key = r.json::<Value>().await.unwrap()["shareable_key"]
        .as_str()
        .unwrap()
        .to_string();
    let text = app
        .smtp
        .wait_for("ada@example.com", 1)
        .await
        .text()
        .unwrap();
    let at = text.find("http://localhost:8080/l/").unwrap() + "http://localhost:8080".len();
    let path: String = text[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let (_driver, c) = browser(false).await;
    c.goto(&format!("{}{path}", app.addr)).await.unwrap();
    let button = c
        .wait()
        .for_element(Locator::Css("button[type=submit]"))
        .await
        .unwrap();
    screenshot("link-confirm-en", &c.screenshot().await.unwrap());
    // Opening it verified nothing.
    let st: Value = app
        .get(&format!("/v1/otp/{key}"), &sk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(st["status"], "pending");
    button.click().await.unwrap();
    let url = landed(&c, &back.url("/back")).await;
    assert!(
        url.ends_with(&format!("?key={key}&status=verified")),
        "{url}"
    );
    let st: Value = app
        .get(&format!("/v1/otp/{key}"), &sk)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(st["verified_via"], "link", "{st}");
    // A second click on the link, from another site (the person's webmail): the browser
    // that finished the flow goes back the same way (API.md §17.2; its page cookie was
    // `SameSite=Strict` and stayed behind, and the page refused it as another visitor).
    let link = format!("{}{path}", app.addr);
    let mail = format!("data:text/html,<a id=again href=\"{link}\">your link</a>");
    c.goto(&mail).await.unwrap();
    click(&c, Locator::Id("again")).await;
    let url = landed(&c, &back.url("/back")).await;
    assert!(
        url.ends_with(&format!("?key={key}&status=verified")),
        "{url}"
    );
    c.close().await.unwrap();
}
