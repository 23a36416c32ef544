//! `otpmint import-otpmint`: an OtpMint-shaped map.db (its three tables) imported into the
//! database of a running server, then used end to end.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::*;
use crate::smtp::{SMTP_PASS, SMTP_USER};

const LEGACY_KEY: &str = "oldclient-secret-abc";
const SALT: &str = "addanysalthereipreferkanye";

fn sha(code: &str) -> String {
    Sha256::digest(format!("{SALT}{code}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn otpmint_db(path: &Path, smtp_port: u16) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE auth (secretKey TEXT UNIQUE, smtp_host TEXT, smtp_port INTEGER, smtp_mail TEXT, smtp_password TEXT);
         CREATE TABLE mappings (shareableKey TEXT UNIQUE, HashedOTP TEXT);
         CREATE TABLE blocklist (shareableKey TEXT, tries INTEGER);",
    )
    .unwrap();
    c.execute(
        "INSERT INTO auth VALUES (?1, '127.0.0.1', ?2, ?3, ?4)",
        rusqlite::params![LEGACY_KEY, smtp_port, SMTP_USER, SMTP_PASS],
    )
    .unwrap();
    c.execute(
        "INSERT INTO auth VALUES ('broken-row-key-0000', '127.0.0.1', NULL, 'x@y.example', 'pw')",
        [],
    )
    .unwrap();
    c.execute(
        "INSERT INTO mappings VALUES ('PendingKey', ?1)",
        [sha("123456")],
    )
    .unwrap();
    c.execute("INSERT INTO blocklist VALUES ('PendingKey', 1)", [])
        .unwrap();
    c.execute(
        "INSERT INTO mappings VALUES ('BlockedKey', ?1)",
        [sha("654321")],
    )
    .unwrap();
    c.execute("INSERT INTO blocklist VALUES ('BlockedKey', 3)", [])
        .unwrap();
    c.execute("INSERT INTO mappings VALUES ('bad', 'nothex')", [])
        .unwrap();
    // Rows 4 to 7: no blocklist row (OtpMint's /verify-otp fails on it), tries that are no
    // count, a NULL. Each is skipped with a line, not imported with a fresh budget.
    for (key, tries) in [
        ("NoBlockRow", None),
        ("TextTriesX", Some("'abc'")),
        ("NegTriesXy", Some("-5")),
        ("NullTriesX", Some("NULL")),
    ] {
        c.execute(
            "INSERT INTO mappings VALUES (?1, ?2)",
            [key, &sha("222222")],
        )
        .unwrap();
        if let Some(t) = tries {
            c.execute(&format!("INSERT INTO blocklist VALUES ('{key}', {t})"), [])
                .unwrap();
        }
    }
}

/// `otpmint import-otpmint PATH` against the app's database.
fn import(app: &TestApp, db: &Path) -> (bool, String, String) {
    app.cli(&["import-otpmint", db.to_str().unwrap()])
}

async fn verify_otp(app: &TestApp, key: &str, otp: &str) -> (StatusCode, String) {
    let r = app
        .post("/verify-otp", "", json!({"shareableKey": key, "otp": otp}))
        .await;
    (r.status(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_tenant_and_pending_code_work_end_to_end_and_a_rerun_changes_nothing() {
    let app = spawn_app().await;
    let source = app.dir.path().join("map.db");
    otpmint_db(&source, app.smtp.port);

    let (ok, out, err) = import(&app, &source);
    assert!(ok, "{err}");
    assert!(
        out.contains("tenants: 1 imported") && out.contains("pending codes: 2 imported"),
        "{out}"
    );
    assert!(
        err.contains("auth row 2: skipped") && err.contains("mappings row 3: skipped"),
        "{err}"
    );
    assert!(
        err.contains("mappings row 4: skipped: blocklist has no row (or no tries)")
            && err.contains("mappings row 5: skipped: its blocklist tries")
            && err.contains("mappings row 6: skipped: its blocklist tries")
            && err.contains("mappings row 7: skipped: blocklist has no row (or no tries)"),
        "{err}"
    );
    for key in ["NoBlockRow", "TextTriesX", "NegTriesXy", "NullTriesX"] {
        assert_eq!(
            verify_otp(&app, key, "222222").await,
            (StatusCode::BAD_REQUEST, "Unknown Error in blocker".into())
        );
    }

    // the pending code verifies once; the one with 3 tries is exhausted
    assert_eq!(
        verify_otp(&app, "PendingKey", "000000").await,
        (StatusCode::FORBIDDEN, "OTP Mismatched!".into())
    );
    assert_eq!(
        verify_otp(&app, "PendingKey", "123456").await,
        (StatusCode::CREATED, "OTP Matched!".into())
    );
    assert_eq!(
        verify_otp(&app, "PendingKey", "123456").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        verify_otp(&app, "BlockedKey", "654321").await,
        (StatusCode::BAD_REQUEST, "Maximum Attempts Reached!".into())
    );

    // the old client keeps its secret key
    let r = app
        .post(
            "/otp",
            "",
            json!({"mail": "ada@example.com", "secretKey": LEGACY_KEY}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let key = r.text().await.unwrap();
    let code = app.smtp.wait_for("ada@example.com", 1).await.code();
    assert_eq!(verify_otp(&app, &key, &code).await.0, StatusCode::CREATED);

    // idempotent
    let (ok, out, _) = import(&app, &source);
    assert!(ok);
    assert!(
        out.contains("tenants: 0 imported, 1 already present")
            && out.contains("pending codes: 0 imported, 2 already present"),
        "{out}"
    );
    let list: serde_json::Value = app.get("/v1/tenants", ADMIN).await.json().await.unwrap();
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1);
    // the stored password is encrypted like any other
    let bytes = app.stored_bytes();
    assert!(!bytes
        .windows(SMTP_PASS.len())
        .any(|w| w == SMTP_PASS.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_import_leaves_the_database_as_it_was() {
    let app = spawn_app().await;
    let source = app.dir.path().join("partial.db");
    let c = rusqlite::Connection::open(&source).unwrap();
    c.execute_batch("CREATE TABLE auth (secretKey TEXT UNIQUE, smtp_host TEXT, smtp_port INTEGER, smtp_mail TEXT, smtp_password TEXT);").unwrap();
    c.execute("INSERT INTO auth VALUES ('some-legacy-key-0001', 'smtp.example.com', 587, 'a@b.example', 'pw')", []).unwrap();
    drop(c);
    let (ok, _, err) = import(&app, &source);
    assert!(!ok);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error:") && l.contains("mappings")),
        "{err}"
    );
    // Said in words: not an OtpMint database, which table; not SQLite's query.
    assert!(
        err.contains("is not an OtpMint map.db") && !err.contains("SELECT"),
        "{err}"
    );
    let list: serde_json::Value = app.get("/v1/tenants", ADMIN).await.json().await.unwrap();
    assert_eq!(list["tenants"].as_array().unwrap().len(), 0);
    let (ok, _, err) = import(&app, &app.dir.path().join("missing.db"));
    assert!(!ok && err.contains("not a file"), "{err}");
}

/// What a run imported stays imported: a re-run after the code was used and its tenant
/// deleted (which deletes its codes) brings back neither the tenant nor a code — a used
/// code never verifies again. (Before: a re-run found them gone and imported them anew,
/// pending with OtpMint's tries.) Imported tenants are named after the sender's domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_never_brings_back_what_was_used_or_deleted() {
    let app = spawn_app().await;
    let source = app.dir.path().join("map.db");
    otpmint_db(&source, app.smtp.port);
    let (ok, _, err) = import(&app, &source);
    assert!(ok, "{err}");
    let list: serde_json::Value = app.get("/v1/tenants", ADMIN).await.json().await.unwrap();
    assert_eq!(list["tenants"][0]["name"], "acme.example", "{list}");
    let id = list["tenants"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        verify_otp(&app, "PendingKey", "123456").await.0,
        StatusCode::CREATED
    );
    let r = app.delete(&format!("/v1/tenants/{id}"), ADMIN).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // OtpMint minted one more code meanwhile: it has no tenant to go to now, and is
    // skipped with a line saying so — the rest of the run goes on.
    let c = rusqlite::Connection::open(&source).unwrap();
    c.execute(
        "INSERT INTO mappings VALUES ('LateKeyAbc', ?1)",
        [sha("111111")],
    )
    .unwrap();
    c.execute("INSERT INTO blocklist VALUES ('LateKeyAbc', 0)", [])
        .unwrap();
    drop(c);

    let (ok, out, err) = import(&app, &source);
    assert!(ok, "{err}");
    assert!(
        out.contains("tenants: 0 imported, 1 already present")
            && out.contains("pending codes: 0 imported, 2 already present"),
        "{out}"
    );
    assert!(
        err.contains("1 pending code(s) skipped: the tenant they go to"),
        "{err}"
    );
    let list: serde_json::Value = app.get("/v1/tenants", ADMIN).await.json().await.unwrap();
    assert_eq!(list["tenants"].as_array().unwrap().len(), 0, "{list}");
    assert_ne!(
        verify_otp(&app, "PendingKey", "123456").await.0,
        StatusCode::CREATED
    );
}
