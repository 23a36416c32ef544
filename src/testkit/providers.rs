#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Fake provider APIs for tests and benchmarks: HTTPS on loopback with a test CA, one per
//! kind, each checking a request exactly as the provider documents it — method, path, auth
//! scheme and credentials, content type, body fields, and for SES the SigV4 signature over
//! what was sent — and answering in the provider's own shapes: its success (with a message
//! id where it gives one) or, when the test asks, its 401, 4xx, 429 (with `Retry-After`) or
//! 5xx. A request that breaks the documentation is answered 400 and noted in `problems()`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{json, Value};

use super::http::{HttpReceiver, Reply, Request};

pub const POSTMARK_TOKEN: &str = "pm-server-token-never-logged";
pub const RESEND_KEY: &str = "re_test_key_never_logged";
pub const SENDGRID_KEY: &str = "SG.test-key-never-logged";
pub const MAILGUN_KEY: &str = "mg-key-never-logged";
pub const MAILGUN_DOMAIN: &str = "mg.acme.example";
pub const SES_KEY_ID: &str = "AKIDEXAMPLE000000000";
pub const SES_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
pub const SES_REGION: &str = "eu-west-1";
pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TWILIO_TOKEN: &str = "twilio-token-never-logged";
pub const TWILIO_FROM: &str = "+15005550006";
pub const VONAGE_KEY: &str = "vonage-key";
pub const VONAGE_SECRET: &str = "vonage-secret-never-logged";
pub const FROM: &str = "Acme <no-reply@acme.example>";

/// What a provider took, as the fake decoded it.
#[derive(Debug, Clone)]
pub struct Taken {
    pub id: String,
    pub from: String,
    pub to: String,
    pub subject: Option<String>,
    pub text: String,
    pub html: Option<String>,
}

impl Taken {
    /// The code: the first run of 4-10 ASCII digits of the text.
    pub fn code(&self) -> String {
        super::smtp::first_code(&self.text).unwrap_or_else(|| panic!("no code in {:?}", self.text))
    }
}

#[derive(Default)]
struct State {
    kind: String,
    /// Answers for the next requests by HTTP status (in the provider's shape).
    failures: Mutex<VecDeque<u16>>,
    taken: Mutex<Vec<Taken>>,
    problems: Mutex<Vec<String>>,
    seq: AtomicUsize,
}

pub struct FakeProvider {
    pub kind: &'static str,
    pub rx: HttpReceiver,
    state: Arc<State>,
}

fn form(req: &Request) -> HashMap<String, String> {
    form_urlencoded::parse(&req.body).into_owned().collect()
}

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// The request's problems against what a kind documents, and what it carried.
fn check(kind: &str, req: &Request) -> (Vec<String>, Option<Taken>, bool) {
    let mut p = Vec::new();
    let mut signing = Vec::new();
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
                ses_signed(req, &mut signing),
                Some(Taken {
                    id: String::new(),
                    from: s(&js["FromEmailAddress"]).unwrap_or_default(),
                    to: s(&js["Destination"]["ToAddresses"][0]).unwrap_or_default(),
                    subject: s(&js["Content"]["Simple"]["Subject"]["Data"]),
                    text: s(&js["Content"]["Simple"]["Body"]["Text"]["Data"]).unwrap_or_default(),
                    html: s(&js["Content"]["Simple"]["Body"]["Html"]["Data"]),
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
                text.is_ascii() || f.get("type").map(String::as_str) == Some("unicode"),
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
    (p, taken, authorized)
}

/// SES: the SigV4 `Authorization` header names the key, today's scope in the region for
/// `ses`, signs at least host and x-amz-date, and its signature is right for what arrived.
fn ses_signed(req: &Request, p: &mut Vec<String>) -> bool {
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
    if credential != format!("{SES_KEY_ID}/{day}/{SES_REGION}/ses/aws4_request") {
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
            service: "ses",
            access_key_id: SES_KEY_ID,
            secret_access_key: SES_SECRET,
            amz_date: date,
        },
    );
    expected == auth
}

/// A success in the provider's shape.
fn success(kind: &str, id: &str, t: &Taken) -> Reply {
    match kind {
        "postmark" => Reply::json(
            200,
            json!({"To": t.to, "SubmittedAt": "2026-11-24T10:00:00Z", "MessageID": id, "ErrorCode": 0, "Message": "OK"}),
        ),
        "resend" => Reply::json(200, json!({"id": id})),
        "sendgrid" => Reply::empty(202).header("x-message-id", id),
        "mailgun" => Reply::json(
            200,
            json!({"id": format!("<{id}@{MAILGUN_DOMAIN}>"), "message": "Queued. Thank you."}),
        ),
        "ses" => Reply::json(200, json!({"MessageId": id})),
        "twilio" => Reply::json(
            201,
            json!({"sid": id, "status": "queued", "to": t.to, "body": t.text, "account_sid": TWILIO_SID}),
        ),
        _ => Reply::json(
            200,
            json!({"message-count": "1", "messages": [{"to": t.to.trim_start_matches('+'), "message-id": id, "status": "0", "remaining-balance": "10.0", "message-price": "0.03", "network": "26201"}]}),
        ),
    }
}

/// A failure with this HTTP status, in the provider's shape.
fn failure(kind: &str, status: u16) -> Reply {
    let r = match (kind, status) {
        ("postmark", 401) => Reply::json(
            401,
            json!({"ErrorCode": 10, "Message": "Bad or missing Server API token."}),
        ),
        ("postmark", s) if s < 500 && s != 429 => Reply::json(
            422,
            json!({"ErrorCode": 300, "Message": "Invalid email request"}),
        ),
        ("postmark", s) => Reply::json(
            s,
            json!({"ErrorCode": 0, "Message": "Internal server error"}),
        ),
        ("resend", 401) => Reply::json(
            401,
            json!({"statusCode": 401, "name": "missing_api_key", "message": "Missing API key"}),
        ),
        ("resend", 403) => Reply::json(
            403,
            json!({"statusCode": 403, "name": "invalid_api_key", "message": "API key is invalid"}),
        ),
        ("resend", 429) => Reply::json(
            429,
            json!({"statusCode": 429, "name": "rate_limit_exceeded", "message": "Too many requests"}),
        ),
        ("resend", s) if s < 500 => Reply::json(
            s,
            json!({"statusCode": s, "name": "validation_error", "message": "Invalid `to` field"}),
        ),
        ("sendgrid", s) => Reply::json(
            s,
            json!({"errors": [{"message": "The provided authorization grant is invalid", "field": null, "help": null}]}),
        ),
        ("mailgun", 401) => Reply {
            status: 401,
            headers: Vec::new(),
            body: b"Forbidden".to_vec(),
        },
        ("mailgun", s) => Reply::json(
            s,
            json!({"message": "'to' parameter is not a valid address"}),
        ),
        ("ses", s) => {
            let t = match s {
                403 => "UnrecognizedClientException",
                429 => "TooManyRequestsException",
                s if s >= 500 => "InternalFailure",
                _ => "MessageRejected",
            };
            Reply::json(s, json!({"message": "refused"})).header(
                "x-amzn-errortype",
                &format!("{t}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"),
            )
        }
        ("twilio", s) => {
            let code = match s {
                401 => 20003,
                429 => 20429,
                s if s >= 500 => 20500,
                _ => 21211,
            };
            Reply::json(
                s,
                json!({"code": code, "message": "refused", "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": s}),
            )
        }
        // Vonage answers 200 and says it in the message's status.
        ("vonage", s) if s < 500 => {
            let status = match s {
                401 | 403 => "4",
                429 => "1",
                _ => "3",
            };
            Reply::json(
                200,
                json!({"message-count": "1", "messages": [{"status": status, "error-text": "refused"}]}),
            )
        }
        (_, s) => Reply::json(s, json!({"error": "unavailable"})),
    };
    if status == 429 || status == 503 {
        r.header("retry-after", "1")
    } else {
        r
    }
}

fn answer(st: &State, req: &Request) -> Reply {
    let (problems, taken, authorized) = check(&st.kind, req);
    if !problems.is_empty() {
        st.problems.lock().unwrap().extend(problems.clone());
        return Reply::json(400, json!({"message": problems.join("; ")}));
    }
    if let Some(status) = st.failures.lock().unwrap().pop_front() {
        return failure(&st.kind, status);
    }
    if !authorized {
        return failure(&st.kind, if st.kind == "ses" { 403 } else { 401 });
    }
    let mut t = taken.unwrap();
    t.id = format!(
        "{}-msg-{}",
        st.kind,
        st.seq.fetch_add(1, Ordering::SeqCst) + 1
    );
    let reply = success(&st.kind, &t.id, &t);
    st.taken.lock().unwrap().push(t);
    reply
}

impl FakeProvider {
    pub async fn start(kind: &'static str) -> FakeProvider {
        let state = Arc::new(State {
            kind: kind.to_string(),
            ..State::default()
        });
        let st = Arc::clone(&state);
        let rx = HttpReceiver::start_with(true, Arc::new(move |req| answer(&st, req))).await;
        FakeProvider { kind, rx, state }
    }

    /// `https://127.0.0.1:PORT`, for `delivery.provider_base_urls`.
    pub fn base_url(&self) -> String {
        self.rx.url("")
    }

    /// The channel its kind sends on.
    pub fn channel(&self) -> &'static str {
        match self.kind {
            "twilio" | "vonage" => "sms",
            _ => "email",
        }
    }

    /// A `PUT /v1/tenant/providers/{channel}` body with the credentials this fake takes.
    pub fn settings(&self, use_as: &str) -> Value {
        let mut v = match self.kind {
            "postmark" => {
                json!({"server_token": POSTMARK_TOKEN, "from": FROM, "message_stream": "outbound"})
            }
            "resend" => json!({"api_key": RESEND_KEY, "from": FROM}),
            "sendgrid" => json!({"api_key": SENDGRID_KEY, "from": FROM}),
            "mailgun" => {
                json!({"api_key": MAILGUN_KEY, "domain": MAILGUN_DOMAIN, "region": "eu", "from": FROM})
            }
            "ses" => {
                json!({"access_key_id": SES_KEY_ID, "secret_access_key": SES_SECRET, "region": SES_REGION, "from": FROM})
            }
            "twilio" => {
                json!({"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN, "from": TWILIO_FROM})
            }
            _ => json!({"api_key": VONAGE_KEY, "api_secret": VONAGE_SECRET, "from": "Acme"}),
        };
        v["kind"] = json!(self.kind);
        v["use"] = json!(use_as);
        v
    }

    /// The secrets in its settings (which must never be shown or logged).
    pub fn secrets(&self) -> Vec<&'static str> {
        match self.kind {
            "postmark" => vec![POSTMARK_TOKEN],
            "resend" => vec![RESEND_KEY],
            "sendgrid" => vec![SENDGRID_KEY],
            "mailgun" => vec![MAILGUN_KEY],
            "ses" => vec![SES_SECRET],
            "twilio" => vec![TWILIO_TOKEN],
            _ => vec![VONAGE_SECRET],
        }
    }

    /// Answer the next requests with these HTTP statuses, in the provider's error shape.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.state.failures.lock().unwrap().extend(statuses);
    }

    /// What it took.
    pub fn taken(&self) -> Vec<Taken> {
        self.state.taken.lock().unwrap().clone()
    }

    /// Wait (at most 20 s) until it took `n` messages.
    pub async fn wait_taken(&self, n: usize) -> Vec<Taken> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let t = self.taken();
            if t.len() >= n {
                return t;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} took {} messages, not {n}; problems: {:?}",
                self.kind,
                t.len(),
                self.problems()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Forget what it took so far (and the requests).
    pub fn clear(&self) {
        self.state.taken.lock().unwrap().clear();
        self.rx.clear();
    }

    /// Requests that broke the provider's documentation.
    pub fn problems(&self) -> Vec<String> {
        self.state.problems.lock().unwrap().clone()
    }
}
