#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Each fake provider's check of a request against its documentation: method, path, auth
//! scheme and credentials, content type, body fields, and SES's SigV4 signature.

use std::collections::HashMap;

use base64::Engine;
use serde_json::Value;

use super::super::http::Request;
use super::*;

fn form(req: &Request) -> HashMap<String, String> {
    form_urlencoded::parse(&req.body).into_owned().collect()
}

/// What Vonage carries as `type=text` (GSM 03.38, written here apart from the sender's
/// table): printable ASCII but the backtick (brackets, braces, `^`, `~`, `|` and `\` by
/// the extension table), space, CR, LF, form feed, and the letters and signs below.
fn gsm(text: &str) -> bool {
    const MORE: &str = "£¥èéùìòÇØøÅåΔΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà€";
    text.chars().all(|c| {
        (c.is_ascii_graphic() && c != '`') || " \r\n\u{0c}".contains(c) || MORE.contains(c)
    })
}

/// A header out of a documented list of `{"Name", "Value"}` objects (Postmark's `Headers`,
/// SES v2's `Content.Simple.Headers`); anything else there is a problem.
fn named_header(list: &Value, name: &str, p: &mut Vec<String>) -> Option<String> {
    if list.is_null() {
        return None;
    }
    let Some(items) = list.as_array() else {
        p.push("headers must be a list of {Name, Value}".into());
        return None;
    };
    let mut found = None;
    for h in items {
        match (h["Name"].as_str(), h["Value"].as_str()) {
            (Some(n), Some(v)) if h.as_object().is_some_and(|o| o.len() == 2) => {
                if n.eq_ignore_ascii_case(name) {
                    found = Some(v.to_string());
                }
            }
            _ => p.push("each header must be {Name, Value} strings".into()),
        }
    }
    found
}

/// A header out of a documented object of name → string value (Resend's and SendGrid's
/// `headers`).
fn object_header(obj: &Value, name: &str, p: &mut Vec<String>) -> Option<String> {
    if obj.is_null() {
        return None;
    }
    let Some(map) = obj.as_object() else {
        p.push("headers must be an object".into());
        return None;
    };
    if !map.values().all(Value::is_string) {
        p.push("header values must be strings".into());
    }
    map.get(name).and_then(Value::as_str).map(str::to_string)
}

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// The request's problems against what a kind documents, and what it carried.
pub(super) fn check(kind: &str, req: &Request) -> (Vec<String>, Option<Taken>, bool) {
    let mut p = Vec::new();
    let mut signing = Vec::new();
    let mut shapes = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            p.push(what.to_string());
        }
    };
    need(req.method == "POST", "method must be POST");
    let ct = req.header("content-type").unwrap_or_default().to_string();
    let auth = req.header("authorization").unwrap_or_default().to_string();
    let js: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let s = |v: &Value| v.as_str().map(str::to_string);
    let (authorized, taken) = match kind {
        "postmark" => {
            need(req.path == "/email", "path must be /email");
            need(
                ct == "application/json",
                "content-type must be application/json",
            );
            need(
                req.header("accept") == Some("application/json"),
                "accept must be application/json",
            );
            need(js["MessageStream"].is_string(), "MessageStream");
            (
                req.header("x-postmark-server-token") == Some(POSTMARK_TOKEN),
                Some(Taken {
                    id: String::new(),
                    from: s(&js["From"]).unwrap_or_default(),
                    to: s(&js["To"]).unwrap_or_default(),
                    subject: s(&js["Subject"]),
                    text: s(&js["TextBody"]).unwrap_or_default(),
                    html: s(&js["HtmlBody"]),
                    auto_submitted: named_header(&js["Headers"], "Auto-Submitted", &mut shapes),
                }),
            )
        }
        "resend" => {
            need(req.path == "/emails", "path must be /emails");
            need(
                ct == "application/json",
                "content-type must be application/json",
            );
            need(js["to"].is_array(), "to must be a list");
            (
                auth == format!("Bearer {RESEND_KEY}"),
                Some(Taken {
                    id: String::new(),
                    from: s(&js["from"]).unwrap_or_default(),
                    to: s(&js["to"][0]).unwrap_or_default(),
                    subject: s(&js["subject"]),
                    text: s(&js["text"]).unwrap_or_default(),
                    html: s(&js["html"]),
                    auto_submitted: object_header(&js["headers"], "Auto-Submitted", &mut shapes),
                }),
            )
        }
        "sendgrid" => {
            need(req.path == "/v3/mail/send", "path must be /v3/mail/send");
            need(
                ct == "application/json",
                "content-type must be application/json",
            );
            need(
                js["content"][0]["type"] == "text/plain",
                "content[0] must be text/plain",
            );
            let from = match (s(&js["from"]["name"]), s(&js["from"]["email"])) {
                (Some(n), Some(e)) => format!("{n} <{e}>"),
                (None, Some(e)) => e,
                _ => String::new(),
            };
            (
                auth == format!("Bearer {SENDGRID_KEY}"),
                Some(Taken {
                    id: String::new(),
                    from,
                    to: s(&js["personalizations"][0]["to"][0]["email"]).unwrap_or_default(),
                    subject: s(&js["subject"]),
                    text: s(&js["content"][0]["value"]).unwrap_or_default(),
                    html: s(&js["content"][1]["value"]),
                    auto_submitted: object_header(&js["headers"], "Auto-Submitted", &mut shapes),
                }),
            )
        }
        "mailgun" => {
            need(
                req.path == format!("/v3/{MAILGUN_DOMAIN}/messages"),
                "path must be /v3/{domain}/messages",
            );
            need(
                ct == "application/x-www-form-urlencoded",
                "content-type must be form-encoded",
            );
            let f = form(req);
            (
                auth == basic("api", MAILGUN_KEY),
                Some(Taken {
                    id: String::new(),
                    from: f.get("from").cloned().unwrap_or_default(),
                    to: f.get("to").cloned().unwrap_or_default(),
                    subject: f.get("subject").cloned(),
                    text: f.get("text").cloned().unwrap_or_default(),
                    html: f.get("html").cloned(),
                    auto_submitted: f.get("h:Auto-Submitted").cloned(),
                }),
            )
        }
        "ses" => {
            need(
                req.path == "/v2/email/outbound-emails",
                "path must be /v2/email/outbound-emails",
            );
            need(
                ct == "application/json",
                "content-type must be application/json",
            );
            (
                ses_signed(req, "ses", &mut signing),
                Some(Taken {
                    id: String::new(),
                    from: s(&js["FromEmailAddress"]).unwrap_or_default(),
                    to: s(&js["Destination"]["ToAddresses"][0]).unwrap_or_default(),
                    subject: s(&js["Content"]["Simple"]["Subject"]["Data"]),
                    text: s(&js["Content"]["Simple"]["Body"]["Text"]["Data"]).unwrap_or_default(),
                    html: s(&js["Content"]["Simple"]["Body"]["Html"]["Data"]),
                    auto_submitted: named_header(
                        &js["Content"]["Simple"]["Headers"],
                        "Auto-Submitted",
                        &mut shapes,
                    ),
                }),
            )
        }
        "twilio" => {
            need(
                req.path == format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"),
                "path must be /2010-04-01/Accounts/{AccountSid}/Messages.json",
            );
            need(
                ct == "application/x-www-form-urlencoded",
                "content-type must be form-encoded",
            );
            let f = form(req);
            need(
                f.contains_key("From") != f.contains_key("MessagingServiceSid"),
                "exactly one of From and MessagingServiceSid",
            );
            (
                auth == basic(TWILIO_SID, TWILIO_TOKEN),
                Some(Taken {
                    id: String::new(),
                    from: f
                        .get("From")
                        .or(f.get("MessagingServiceSid"))
                        .cloned()
                        .unwrap_or_default(),
                    to: f.get("To").cloned().unwrap_or_default(),
                    subject: None,
                    text: f.get("Body").cloned().unwrap_or_default(),
                    html: None,
                    auto_submitted: None,
                }),
            )
        }
        "vonage" => {
            need(req.path == "/sms/json", "path must be /sms/json");
            need(
                ct == "application/x-www-form-urlencoded",
                "content-type must be form-encoded",
            );
            let f = form(req);
            let to = f.get("to").cloned().unwrap_or_default();
            need(
                !to.starts_with('+') && to.bytes().all(|b| b.is_ascii_digit()),
                "to must be digits without +",
            );
            let text = f.get("text").cloned().unwrap_or_default();
            need(
                gsm(&text) || f.get("type").map(String::as_str) == Some("unicode"),
                "type=unicode for text beyond GSM",
            );
            (
                f.get("api_key").map(String::as_str) == Some(VONAGE_KEY)
                    && f.get("api_secret").map(String::as_str) == Some(VONAGE_SECRET),
                Some(Taken {
                    id: String::new(),
                    from: f.get("from").cloned().unwrap_or_default(),
                    to: format!("+{to}"),
                    subject: None,
                    text,
                    html: None,
                    auto_submitted: None,
                }),
            )
        }
        other => panic!("no fake for {other}"),
    };
    if let Some(t) = &taken {
        need(!t.to.is_empty(), "a recipient");
        need(!t.text.is_empty(), "a text");
        need(!t.from.is_empty(), "a sender");
    }
    p.extend(signing);
    p.extend(shapes);
    (p, taken, authorized)
}

/// STS's `GetCallerIdentity` with the SES fake's key (the fake stands for one endpoint of
/// every AWS service): `POST /`, form-encoded `Action` and `Version` and nothing else,
/// signed for `sts`. The problems, and whether the key was the fake's.
pub(super) fn caller_identity(req: &Request) -> (Vec<String>, bool) {
    let mut p = Vec::new();
    let ct = req.header("content-type").unwrap_or_default();
    if req.method != "POST" || req.path != "/" {
        p.push("GetCallerIdentity must be POST /".into());
    }
    if ct.split(';').next() != Some("application/x-www-form-urlencoded") {
        p.push("content-type must be form-encoded".into());
    }
    let f = form(req);
    let expected: HashMap<String, String> =
        [("Action", "GetCallerIdentity"), ("Version", "2011-06-15")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    if f != expected {
        p.push("the form must be Action=GetCallerIdentity and Version=2011-06-15".into());
    }
    let authorized = ses_signed(req, "sts", &mut p);
    (p, authorized)
}

/// SES (and STS): the SigV4 `Authorization` header names the key, today's scope in the
/// region for `service`, signs at least host and x-amz-date, and its signature is right for
/// what arrived.
fn ses_signed(req: &Request, service: &str, p: &mut Vec<String>) -> bool {
    let auth = req.header("authorization").unwrap_or_default();
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        p.push("authorization must be AWS4-HMAC-SHA256".into());
        return false;
    };
    let fields: HashMap<&str, &str> = rest
        .split(", ")
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let date = req.header("x-amz-date").unwrap_or_default();
    let day = date.get(..8).unwrap_or_default();
    let credential = fields.get("Credential").copied().unwrap_or_default();
    let signed: Vec<&str> = fields
        .get("SignedHeaders")
        .copied()
        .unwrap_or_default()
        .split(';')
        .collect();
    if !signed.contains(&"host") || !signed.contains(&"x-amz-date") {
        p.push("host and x-amz-date must be signed".into());
    }
    if credential != format!("{SES_KEY_ID}/{day}/{SES_REGION}/{service}/aws4_request") {
        // Another key or region: the service's 403.
        return false;
    }
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|h| (*h, req.header(h).unwrap_or_default()))
        .collect();
    let expected = crate::service::delivery::transport::sigv4::authorization(
        &crate::service::delivery::transport::sigv4::Signing {
            method: &req.method,
            path: &req.path,
            query: "",
            headers: &headers,
            payload: &req.body,
            region: SES_REGION,
            service,
            access_key_id: SES_KEY_ID,
            secret_access_key: SES_SECRET,
            amz_date: date,
        },
    );
    expected == auth
}
