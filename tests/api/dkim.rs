//! DKIM per tenant (API.md §16.3) and the domain check (§16.4) over HTTP: a message received
//! by the test SMTP server verifies against the record published on a DNS server on
//! loopback — checked by a verifier written here from RFC 6376 (relaxed/relaxed) and RFC
//! 8463, not by the signer's code — rotation, removal, alignment; and the domain check's
//! answers for found, missing and misaligned records.

use base64::Engine;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::Resolver;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::*;
use otpmint::testkit::dns::DnsServer;

async fn app_with_dns(dns: &DnsServer) -> TestApp {
    let addr = dns.addr.to_string();
    spawn_app_with(move |s| s.dns.resolver = addr).await
}

/// The TXT record at `name`, asked of the test DNS server.
async fn lookup(dns: &DnsServer, name: &str) -> Option<String> {
    let mut ns = NameServerConfig::udp(dns.addr.ip());
    ns.connections[0].port = dns.addr.port();
    let r = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    )
    .build()
    .unwrap();
    let l = r.lookup(format!("{name}."), RecordType::TXT).await.ok()?;
    l.answers().iter().find_map(|rec| match &rec.data {
        RData::TXT(t) => Some(
            t.txt_data
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect(),
        ),
        _ => None,
    })
}

fn tags(v: &str) -> Vec<(String, String)> {
    v.split(';')
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_string(),
                v.chars().filter(|c| !c.is_whitespace()).collect(),
            ))
        })
        .collect()
}

fn tag<'a>(t: &'a [(String, String)], k: &str) -> &'a str {
    t.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// Relaxed header canonicalization (RFC 6376 §3.4.2) of one unfolded `Name: value`.
fn relaxed_header(raw: &str) -> String {
    let (name, value) = raw.split_once(':').unwrap();
    let unfolded = value.replace("\r\n", "");
    let squeezed = unfolded
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{}:{}\r\n",
        name.trim().to_ascii_lowercase(),
        squeezed.trim()
    )
}

/// Relaxed body canonicalization (RFC 6376 §3.4.4).
fn relaxed_body(body: &str) -> String {
    let mut lines: Vec<String> = body
        .split("\r\n")
        .map(|l| {
            // Runs of whitespace become one space (a leading run too); trailing goes.
            let mut out = String::new();
            for c in l.chars() {
                if c == ' ' || c == '\t' {
                    if !out.ends_with(' ') {
                        out.push(' ');
                    }
                } else {
                    out.push(c);
                }
            }
            out.trim_end().to_string()
        })
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    if lines.is_empty() {
        return String::new();
    }
    lines.join("\r\n") + "\r\n"
}

/// Verify the message's DKIM-Signature against the record in DNS: `Ok(selector)` or why not.
async fn verify(dns: &DnsServer, raw: &str) -> Result<String, String> {
    let raw = raw.replace("\r\n", "\n").replace('\n', "\r\n");
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no body")?;
    // Headers, unfolded into whole fields.
    let mut fields: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let last = fields.last_mut().ok_or("continuation first")?;
            last.push_str("\r\n");
            last.push_str(line);
        } else {
            fields.push(line.to_string());
        }
    }
    let sig_field = fields
        .iter()
        .find(|f| f.to_ascii_lowercase().starts_with("dkim-signature:"))
        .ok_or("unsigned")?
        .clone();
    let t = tags(sig_field.split_once(':').unwrap().1);
    if tag(&t, "c") != "relaxed/relaxed" {
        return Err(format!("c={}", tag(&t, "c")));
    }
    let bh = Sha256::digest(relaxed_body(body).as_bytes());
    if base64::engine::general_purpose::STANDARD.encode(bh) != tag(&t, "bh") {
        return Err("body hash".into());
    }
    let mut data = String::new();
    // Each listed name takes the next instance from the bottom; one not there adds nothing.
    let mut used: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for name in tag(&t, "h").split(':') {
        let n = used.entry(name.to_ascii_lowercase()).or_default();
        if let Some(f) = fields
            .iter()
            .rev()
            .filter(|f| {
                f.split_once(':')
                    .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            })
            .nth(*n)
        {
            data.push_str(&relaxed_header(f));
        }
        *n += 1;
    }
    // The signature field itself, b= emptied, no final CRLF.
    let b_at = sig_field.find("b=").ok_or("no b=")?;
    let b_start = b_at + 2;
    let b_end = sig_field[b_start..]
        .find(';')
        .map_or(sig_field.len(), |i| b_start + i);
    let emptied = format!("{}{}", &sig_field[..b_start], &sig_field[b_end..]);
    // b= must be the b= tag, not bh=: the first "b=" after a separator.
    let emptied = if sig_field[..b_at].ends_with('h') {
        let b2 = sig_field[b_start..].find("b=").ok_or("no b=")? + b_start;
        let s = b2 + 2;
        let e = sig_field[s..].find(';').map_or(sig_field.len(), |i| s + i);
        format!("{}{}", &sig_field[..s], &sig_field[e..])
    } else {
        emptied
    };
    data.push_str(relaxed_header(&emptied).trim_end_matches("\r\n"));
    let hash = Sha256::digest(data.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD
        .decode(tag(&t, "b"))
        .map_err(|_| "b= is not base64")?;
    let name = format!("{}._domainkey.{}", tag(&t, "s"), tag(&t, "d"));
    let record = lookup(dns, &name)
        .await
        .ok_or(format!("no record at {name}"))?;
    let rt = tags(&record);
    let p = base64::engine::general_purpose::STANDARD
        .decode(tag(&rt, "p"))
        .map_err(|_| "p= is not base64")?;
    match tag(&t, "a") {
        "ed25519-sha256" => ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &p)
            .verify(&hash, &sig)
            .map_err(|_| "ed25519 signature".to_string())?,
        "rsa-sha256" => {
            use rsa::pkcs8::DecodePublicKey;
            let key = rsa::RsaPublicKey::from_public_key_der(&p).map_err(|e| e.to_string())?;
            key.verify(rsa::Pkcs1v15Sign::new::<rsa::sha2::Sha256>(), &hash, &sig)
                .map_err(|_| "rsa signature".to_string())?
        }
        a => return Err(format!("a={a}")),
    }
    Ok(tag(&t, "s").to_string())
}

async fn mint_raw(app: &TestApp, sk: &str, to: &str) -> String {
    let before = app.smtp.count_to(to);
    let r = app.post("/v1/otp", sk, json!({"email": to})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    app.smtp.wait_for(to, before + 1).await.data
}

/// The tenant's domain check, answered 200.
async fn domain_check(app: &TestApp, sk: &str) -> Value {
    let (s, v) = body(app.get("/v1/tenant/domain-check", sk).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn make_key(app: &TestApp, sk: &str, b: Value) -> (StatusCode, Value) {
    body(app.post("/v1/tenant/dkim", sk, b).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_message_verifies_against_the_published_record_through_rotation_and_removal() {
    let dns = DnsServer::start().await;
    let app = app_with_dns(&dns).await;
    let (_, sk) = app.tenant().await;

    // Unsigned before any key; bad requests make none.
    let raw = mint_raw(&app, &sk, "ada@example.com").await;
    assert_eq!(verify(&dns, &raw).await, Err("unsigned".into()));
    for bad in [
        json!({"domain": "acme.example", "algorithm": "dsa"}),
        json!({"domain": "localhost", "algorithm": "ed25519"}),
        // An IP address is no domain name (found by the differential audit: 201, with a
        // record name `otpmint1._domainkey.127.0.0.1`).
        json!({"domain": "127.0.0.1", "algorithm": "ed25519"}),
        json!({"domain": "acme.example", "algorithm": "ed25519", "selector": "bad_one"}),
        json!({"algorithm": "ed25519"}),
    ] {
        assert_eq!(
            make_key(&app, &sk, bad.clone()).await.0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let (s, _) = body(app.get("/v1/tenant/dkim", &sk).await).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, k) = make_key(
        &app,
        &sk,
        json!({"domain": "acme.example", "algorithm": "ed25519"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    assert_eq!(k["name"], "otpmint1._domainkey.acme.example");
    let value = k["value"].as_str().unwrap().to_string();
    assert!(value.starts_with("v=DKIM1; k=ed25519; p="), "{value}");
    dns.set_txt("otpmint1._domainkey.acme.example", &[&value]);
    let raw = mint_raw(&app, &sk, "ada@example.com").await;
    assert_eq!(verify(&dns, &raw).await, Ok("otpmint1".into()), "{raw}");
    // The h= list as signed, once its folds are undone.
    assert!(
        raw.replace("\r\n ", "").replace("\n ", "").contains("h=from:from:to:to:subject:subject:date:date:message-id:message-id:mime-version:mime-version:content-type:content-type;"),
        "{raw}"
    );
    // A second From added on the way breaks the signature (oversigned).
    let added = format!("From: Eve <eve@evil.example>\r\n{raw}");
    assert!(verify(&dns, &added).await.is_err());
    // The verifier can fail: a changed code, or another key published.
    let code = app.smtp.messages().last().unwrap().code();
    let forged = raw.replace(&code, "000000");
    assert_eq!(verify(&dns, &forged).await, Err("body hash".into()));
    let (other, _) =
        otpmint::domain::dkim::generate(otpmint::domain::dkim::DkimAlgorithm::Ed25519).unwrap();
    dns.set_txt(
        "otpmint1._domainkey.acme.example",
        &[&format!("v=DKIM1; k=ed25519; p={other}")],
    );
    assert_eq!(verify(&dns, &raw).await, Err("ed25519 signature".into()));
    dns.set_txt("otpmint1._domainkey.acme.example", &[&value]);

    // A data-key rotation (another process) re-seals the private key: it still signs.
    let (ok, _, err) = app.cli(&["keys", "rotate-data-key"]);
    assert!(ok, "{err}");
    let raw = mint_raw(&app, &sk, "eve@example.com").await;
    assert_eq!(verify(&dns, &raw).await, Ok("otpmint1".into()), "{raw}");

    // Rotation: an RSA key under a second selector signs from now on.
    let (s, _) = make_key(
        &app,
        &sk,
        json!({"domain": "acme.example", "algorithm": "ed25519", "selector": "otpmint1"}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, k2) = make_key(
        &app,
        &sk,
        json!({"domain": "acme.example", "algorithm": "rsa2048", "selector": "s2026"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{k2}");
    assert!(k2["value"]
        .as_str()
        .unwrap()
        .starts_with("v=DKIM1; k=rsa; p="));
    dns.set_txt(
        "s2026._domainkey.acme.example",
        &[k2["value"].as_str().unwrap()],
    );
    let raw = mint_raw(&app, &sk, "bob@example.com").await;
    assert_eq!(verify(&dns, &raw).await, Ok("s2026".into()), "{raw}");
    let (s, g) = body(app.get("/v1/tenant/dkim", &sk).await).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(g["selector"], "s2026", "{g}");
    assert_eq!(g["keys"].as_array().unwrap().len(), 2, "{g}");
    assert!(!g.to_string().contains("PRIVATE"), "{g}");
    // A newer key for another domain does not stop the aligned one signing (API.md §16.3).
    let (s, _) = make_key(
        &app,
        &sk,
        json!({"domain": "other.example", "algorithm": "ed25519", "selector": "s3"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let raw = mint_raw(&app, &sk, "bo@example.com").await;
    assert_eq!(verify(&dns, &raw).await, Ok("s2026".into()), "{raw}");
    // And GET shows that key as the signing one, not the newer key for another domain.
    let (_, g) = body(app.get("/v1/tenant/dkim", &sk).await).await;
    assert_eq!(g["selector"], "s2026", "{g}");

    // Removed: unsigned again.
    assert_eq!(
        app.delete("/v1/tenant/dkim", &sk).await.status(),
        StatusCode::NO_CONTENT
    );
    let raw = mint_raw(&app, &sk, "cy@example.com").await;
    assert_eq!(verify(&dns, &raw).await, Err("unsigned".into()));
    assert_eq!(
        app.delete("/v1/tenant/dkim", &sk).await.status(),
        StatusCode::NOT_FOUND
    );

    // A key for another domain than the sender's signs nothing.
    let (s, _) = make_key(
        &app,
        &sk,
        json!({"domain": "other.example", "algorithm": "ed25519"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let raw = mint_raw(&app, &sk, "di@example.com").await;
    assert_eq!(verify(&dns, &raw).await, Err("unsigned".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internationalized_sender_domain_is_signed_checked_and_scoped_in_its_a_label_form() {
    let dns = DnsServer::start().await;
    let app = app_with_dns(&dns).await;
    let (id, sk) = app.tenant().await;
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({"smtp": {"from": "Bücher <codes@Bücher.de>"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // The key is made for the name as typed and shown as DNS holds it.
    let (s, k) = make_key(
        &app,
        &sk,
        json!({"domain": "bücher.de", "algorithm": "ed25519"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    assert_eq!(k["domain"], "xn--bcher-kva.de", "{k}");
    assert_eq!(k["name"], "otpmint1._domainkey.xn--bcher-kva.de");
    dns.set_txt(
        "otpmint1._domainkey.xn--bcher-kva.de",
        &[k["value"].as_str().unwrap()],
    );
    // It signs the sender's mail: the sender's domain aligns with it.
    let raw = mint_raw(&app, &sk, "ada@example.com").await;
    assert_eq!(verify(&dns, &raw).await, Ok("otpmint1".into()), "{raw}");

    // The domain check looks the records up under the A-label name.
    dns.set_txt("xn--bcher-kva.de", &["v=spf1 ip4:192.0.2.1 ~all"]);
    dns.set_txt("_dmarc.xn--bcher-kva.de", &["v=DMARC1; p=none"]);
    let (s, v) = body(app.get("/v1/tenant/domain-check", &sk).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["domain"], "xn--bcher-kva.de", "{v}");
    assert_eq!(v["spf"]["found"], true, "{v}");
    assert_eq!(
        v["dkim"],
        json!({"found": true, "matches_key": true}),
        "{v}"
    );
    assert_eq!(v["dmarc"]["aligned"], true, "{v}");

    // Test mode: a pattern on the sender's own domain is in scope, typed either way; one
    // on another domain is not.
    let expires =
        otpmint::clock::rfc3339(otpmint::clock::Clock::now(app.clock.as_ref()) + 24 * 3600 * 1000);
    for (pattern, status) in [
        ("*@bücher.de", StatusCode::OK),
        ("*@xn--bcher-kva.de", StatusCode::OK),
        ("*@bucher.de", StatusCode::BAD_REQUEST),
    ] {
        let r = app
            .put(
                "/v1/tenant/test-recipients",
                &sk,
                json!({"recipients": [{"match": pattern, "expires_at": expires}]}),
            )
            .await;
        assert_eq!(r.status(), status, "{pattern}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dns_look_up_is_told_as_unknown_not_as_a_missing_record() {
    let dns = DnsServer::start().await;
    let app = app_with_dns(&dns).await;
    let (_, sk) = app.tenant().await;
    dns.set_txt("acme.example", &["v=spf1 ~all"]);
    dns.fail("_dmarc.acme.example");
    let (s, v) = body(app.get("/v1/tenant/domain-check", &sk).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["spf"]["found"], true, "{v}");
    assert_eq!(v["dmarc"]["found"], false, "{v}");
    let advice: Vec<&str> = v["advice"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        advice
            .iter()
            .any(|a| a.contains("look-up of _dmarc.acme.example failed")),
        "{v}"
    );
    assert!(
        !advice.iter().any(|a| a.contains("no DMARC record")),
        "an unknown is not a missing record: {v}"
    );
    // Every look-up failing: one sentence each, none saying "publish".
    dns.fail("acme.example");
    let (s, v) = body(app.get("/v1/tenant/domain-check", &sk).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let advice = v["advice"].to_string();
    assert!(advice.contains("look-up of acme.example failed"), "{v}");
    assert!(!advice.contains("no SPF record"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_domain_check_answers_found_missing_and_misaligned_records() {
    let dns = DnsServer::start().await;
    let app = app_with_dns(&dns).await;
    let (id, sk) = app.tenant().await;

    // Nothing published, no key: three problems.
    let v = domain_check(&app, &sk).await;
    assert_eq!(v["domain"], "acme.example");
    assert_eq!(v["spf"]["found"], false, "{v}");
    assert_eq!(
        v["dkim"],
        json!({"found": false, "matches_key": false}),
        "{v}"
    );
    assert_eq!(v["dmarc"]["found"], false, "{v}");
    assert_eq!(v["advice"].as_array().unwrap().len(), 3, "{v}");

    // Everything published and matching: no advice.
    let (_, k) = make_key(
        &app,
        &sk,
        json!({"domain": "acme.example", "algorithm": "ed25519"}),
    )
    .await;
    dns.set_txt(
        "acme.example",
        &["v=spf1 ip4:192.0.2.1 ~all", "google-site-verification=x"],
    );
    dns.set_txt(
        "otpmint1._domainkey.acme.example",
        &[k["value"].as_str().unwrap()],
    );
    dns.set_txt(
        "_dmarc.acme.example",
        &["v=DMARC1; p=reject; rua=mailto:d@acme.example"],
    );
    let v = domain_check(&app, &sk).await;
    assert_eq!(v["spf"]["found"], true, "{v}");
    assert_eq!(v["spf"]["record"], "v=spf1 ip4:192.0.2.1 ~all", "{v}");
    assert_eq!(
        v["dkim"],
        json!({"found": true, "matches_key": true}),
        "{v}"
    );
    assert_eq!(v["dmarc"]["policy"], "reject", "{v}");
    assert_eq!(v["dmarc"]["aligned"], true, "{v}");
    assert_eq!(v["advice"], json!([]), "{v}");
    // The CLI answers the same.
    let (ok, out, err) = app.cli(&["tenant", "check-domain", &id]);
    assert!(ok, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        cli["dkim"],
        json!({"found": true, "matches_key": true}),
        "{out}"
    );
    assert_eq!(cli["advice"], json!([]), "{out}");

    // Two SPF records; another key published; strict DKIM alignment for a subdomain sender.
    dns.set_txt("acme.example", &["v=spf1 ~all", "v=spf1 -all"]);
    dns.set_txt(
        "otpmint1._domainkey.acme.example",
        &["v=DKIM1; k=ed25519; p=AAAA"],
    );
    let v = domain_check(&app, &sk).await;
    assert_eq!(v["dkim"]["matches_key"], false, "{v}");
    let advice = v["advice"].to_string();
    assert!(advice.contains("2 SPF records"), "{advice}");
    assert!(advice.contains("another key"), "{advice}");
    // The tenant's Ed25519 key published as RSA (k=rsa, or no k=, which means RSA) is not
    // the tenant's key either: receivers would fail its signatures.
    let p = k["value"]
        .as_str()
        .unwrap()
        .split("p=")
        .nth(1)
        .unwrap()
        .to_string();
    // A tag name is case-sensitive (RFC 6376 §3.2): `K=` is no `k=`, so that record is RSA.
    for record in [
        format!("v=DKIM1; k=rsa; p={p}"),
        format!("v=DKIM1; p={p}"),
        format!("v=DKIM1; K=ed25519; p={p}"),
    ] {
        dns.set_txt("otpmint1._domainkey.acme.example", &[&record]);
        let v = domain_check(&app, &sk).await;
        assert_eq!(v["dkim"]["matches_key"], false, "{record}: {v}");
        assert!(v["advice"].to_string().contains("another key"), "{v}");
    }

    dns.set_txt(
        "otpmint1._domainkey.acme.example",
        &[k["value"].as_str().unwrap()],
    );
    let r = app
        .patch(
            "/v1/tenant",
            &sk,
            json!({"smtp": {"from": "Acme <no-reply@mail.acme.example>"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    dns.set_txt("mail.acme.example", &["v=spf1 ~all"]);
    dns.set_txt("_dmarc.acme.example", &["v=DMARC1; p=quarantine; adkim=s"]);
    let v = domain_check(&app, &sk).await;
    assert_eq!(v["domain"], "mail.acme.example", "{v}");
    // No _dmarc.mail.acme.example: the organizational domain's record, strict.
    assert_eq!(v["dmarc"]["found"], true, "{v}");
    assert_eq!(v["dmarc"]["policy"], "quarantine", "{v}");
    assert_eq!(v["dmarc"]["aligned"], false, "{v}");
    assert!(v["advice"].to_string().contains("adkim=s"), "{v}");
    dns.set_txt("_dmarc.acme.example", &["v=DMARC1; p=quarantine"]);
    let v = domain_check(&app, &sk).await;
    assert_eq!(v["dmarc"]["aligned"], true, "{v}");
    assert!(dns
        .queries()
        .iter()
        .any(|q| q == "_dmarc.mail.acme.example"));

    // A key only for a subdomain of the sender's domain never signs its mail (API.md §16.3):
    // published and relaxed DMARC or not, the signature cannot align.
    let (_, other) = app.tenant().await;
    let (_, k) = make_key(
        &app,
        &other,
        json!({"domain": "mail.acme.example", "algorithm": "ed25519"}),
    )
    .await;
    dns.set_txt(
        "otpmint1._domainkey.mail.acme.example",
        &[k["value"].as_str().unwrap()],
    );
    let v = domain_check(&app, &other).await;
    assert_eq!(v["domain"], "acme.example", "{v}");
    assert_eq!(v["dkim"]["matches_key"], true, "{v}");
    assert_eq!(v["dmarc"]["found"], true, "{v}");
    assert_eq!(v["dmarc"]["aligned"], false, "{v}");
    let advice = v["advice"].to_string();
    assert!(advice.contains("signs for mail.acme.example"), "{advice}");
}

/// One sentence per problem, and the right one: a key for another domain than the sender's
/// is told so (publishing it would not help), not "publish it"; a record that holds another
/// key is told that, without a DMARC sentence about domains that do match; two DMARC
/// records are a problem of their own (RFC 7489 §6.6.3: none applies); `v=spf10` is no SPF
/// record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_domain_check_tells_each_problem_once_and_rightly() {
    let dns = DnsServer::start().await;
    let app = app_with_dns(&dns).await;
    let (_, sk) = app.tenant().await;
    dns.set_txt("acme.example", &["v=spf1 ip4:192.0.2.1 ~all"]);
    dns.set_txt("_dmarc.acme.example", &["v=DMARC1; p=reject"]);
    // A key for another domain, its record not published.
    let (s, k) = make_key(
        &app,
        &sk,
        json!({"domain": "other.example", "algorithm": "ed25519"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let v = domain_check(&app, &sk).await;
    let advice = v["advice"].to_string();
    assert!(advice.contains("make a key for acme.example"), "{advice}");
    assert!(!advice.contains("is not published"), "{advice}");
    // A key for the sender's domain whose record holds another key.
    let r = app.delete("/v1/tenant/dkim", &sk).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, k) = make_key(
        &app,
        &sk,
        json!({"domain": "acme.example", "algorithm": "ed25519"}),
    )
    .await;
    dns.set_txt(
        "otpmint1._domainkey.acme.example",
        &["v=DKIM1; k=ed25519; p=AAAA"],
    );
    let v = domain_check(&app, &sk).await;
    let advice = v["advice"].as_array().unwrap().clone();
    assert_eq!(advice.len(), 1, "{v}");
    assert!(advice[0].to_string().contains("another key"), "{v}");
    assert_eq!(v["dmarc"]["aligned"], false, "{v}");
    // Published right; then two DMARC records, and an SPF look-alike.
    dns.set_txt(
        "otpmint1._domainkey.acme.example",
        &[k["value"].as_str().unwrap()],
    );
    assert_eq!(domain_check(&app, &sk).await["advice"], json!([]));
    dns.set_txt(
        "_dmarc.acme.example",
        &["v=DMARC1; p=reject", "v=DMARC1; p=none"],
    );
    dns.set_txt("acme.example", &["v=spf10 -all"]);
    let v = domain_check(&app, &sk).await;
    assert_eq!(v["dmarc"]["found"], true, "{v}");
    assert_eq!(v["dmarc"]["policy"], Value::Null, "{v}");
    assert_eq!(v["spf"]["found"], false, "{v}");
    let advice = v["advice"].to_string();
    assert!(advice.contains("2 DMARC records"), "{advice}");
    assert!(advice.contains("publishes no SPF record"), "{advice}");
}

/// SPF is checked on the envelope sender: a tenant sending through Postmark (which sends with
/// a return path of its own) is asked for no include at its `from` domain; one sending
/// through Mailgun with the `from` domain as its sending domain is asked for Mailgun's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_domain_check_asks_an_spf_include_only_where_the_provider_sends_as_the_domain() {
    let dns = DnsServer::start().await;
    let app = app_with_dns(&dns).await;
    dns.set_txt("acme.example", &["v=spf1 ip4:192.0.2.1 ~all"]);
    let provider = |settings: Value| {
        let app = &app;
        async move {
            let (s, v) = body(
                app.post("/v1/tenants", ADMIN, json!({"name": "Acme"}))
                    .await,
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            let sk = v["secret_key"].as_str().unwrap().to_string();
            let (s, v) = body(app.put("/v1/tenant/providers/email", &sk, settings).await).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            sk
        }
    };
    let postmark = provider(json!({"kind": "postmark", "use": "primary",
        "server_token": "pm-token", "from": "Acme <no-reply@acme.example>"}))
    .await;
    let v = domain_check(&app, &postmark).await;
    assert_eq!(v["domain"], "acme.example", "{v}");
    assert_eq!(v["spf"]["found"], true, "{v}");
    assert!(
        v["spf"].get("includes_relay").is_none_or(Value::is_null),
        "{v}"
    );
    assert!(!v["advice"].to_string().contains("include"), "{v}");
    // A domain with no SPF record at all is not told to publish one for Postmark either.
    let bare = provider(json!({"kind": "postmark", "use": "primary",
        "server_token": "pm-token", "from": "Bare <no-reply@bare.example>"}))
    .await;
    let v = domain_check(&app, &bare).await;
    assert_eq!(v["domain"], "bare.example", "{v}");
    assert_eq!(v["spf"]["found"], false, "{v}");
    assert!(!v["advice"].to_string().contains("SPF"), "{v}");
    assert!(!v["advice"].to_string().contains("look-up"), "{v}");

    let mailgun = provider(json!({"kind": "mailgun", "use": "primary", "region": "us",
        "api_key": "key-0123456789abcdef", "domain": "acme.example",
        "from": "Acme <no-reply@acme.example>"}))
    .await;
    let v = domain_check(&app, &mailgun).await;
    assert_eq!(v["spf"]["includes_relay"], false, "{v}");
    assert!(
        v["advice"].to_string().contains("include:mailgun.org"),
        "{v}"
    );
}
