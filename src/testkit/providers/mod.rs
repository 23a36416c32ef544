#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Fake provider APIs for tests and benchmarks: HTTPS on loopback with a test CA, one per
//! kind, each checking a request exactly as the provider documents it — method, path, auth
//! scheme and credentials, content type, body fields, and for SES the SigV4 signature over
//! what was sent — and answering in the provider's own shapes: its success (with a message
//! id where it gives one) or, when the test asks, its 401, 4xx, 429 (with `Retry-After`) or
//! 5xx. A request that breaks the documentation is answered 400 and noted in `problems()`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::http::{HttpReceiver, Reply, Request};
use checks::check;

mod checks;

pub const POSTMARK_TOKEN: &str = "pm-server-token-never-logged";
pub const RESEND_KEY: &str = "re_test_key_never_logged";
pub const SENDGRID_KEY: &str = "SG.test-key-never-logged";
pub const MAILGUN_KEY: &str = "mg-key-never-logged";
pub const MAILGUN_DOMAIN: &str = "mg.acme.example";
pub const SES_KEY_ID: &str = "AKIDEXAMPLE000000000";
pub const SES_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
pub const SES_REGION: &str = "eu-west-1";
/// The AWS account STS names for the SES fake's key (the account of
/// [`crate::testkit::provider_events::SNS_TOPIC`]).
pub const SES_ACCOUNT: &str = "123456789012";
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
    /// The message's `Auto-Submitted` header, in the field the provider documents for
    /// custom headers.
    pub auto_submitted: Option<String>,
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
    /// Requests still to be answered with the request itself as the message's id.
    echo: AtomicUsize,
    /// STS `GetCallerIdentity` requests answered (SES).
    caller_identities: AtomicUsize,
}

pub struct FakeProvider {
    pub kind: &'static str,
    pub rx: HttpReceiver,
    state: Arc<State>,
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
    if st.kind == "ses" && req.path == "/" {
        return caller_identity(st, req);
    }
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
    let echo = st
        .echo
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let reply = if echo {
        // What a broken provider (or a proxy) that echoes its request might answer.
        let echoed = form_urlencoded::Serializer::new(String::new())
            .append_pair("To", &t.to)
            .append_pair("Body", &t.text)
            .finish();
        success(&st.kind, &echoed, &t)
    } else {
        success(&st.kind, &t.id, &t)
    };
    st.taken.lock().unwrap().push(t);
    reply
}

/// STS's answer to `GetCallerIdentity` (its documented XML), or its 403 for another key.
fn caller_identity(st: &State, req: &Request) -> Reply {
    let (problems, authorized) = checks::caller_identity(req);
    if !problems.is_empty() {
        st.problems.lock().unwrap().extend(problems.clone());
        return Reply::json(400, json!({"message": problems.join("; ")}));
    }
    if let Some(status) = st.failures.lock().unwrap().pop_front() {
        return Reply::empty(status);
    }
    let xml = |status: u16, body: String| Reply {
        status,
        headers: vec![("content-type".into(), "text/xml".into())],
        body: body.into_bytes(),
    };
    if !authorized {
        return xml(
            403,
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
             <Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message>\
             </Error><RequestId>4e5f6a7b</RequestId></ErrorResponse>"
                .into(),
        );
    }
    st.caller_identities.fetch_add(1, Ordering::SeqCst);
    xml(
        200,
        format!(
            "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <GetCallerIdentityResult><Arn>arn:aws:iam::{SES_ACCOUNT}:user/otpmint</Arn>\
             <UserId>AIDAEXAMPLEUSERID0000</UserId><Account>{SES_ACCOUNT}</Account>\
             </GetCallerIdentityResult><ResponseMetadata><RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId>\
             </ResponseMetadata></GetCallerIdentityResponse>"
        ),
    )
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

    /// Answer the next `n` messages it takes with the request itself (the recipient and
    /// the text, code included) where the message's id belongs.
    pub fn echo_next(&self, n: usize) {
        self.state.echo.fetch_add(n, Ordering::SeqCst);
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

    /// STS `GetCallerIdentity` requests it answered with the account (SES).
    pub fn caller_identities(&self) -> usize {
        self.state.caller_identities.load(Ordering::SeqCst)
    }

    /// Requests that broke the provider's documentation.
    pub fn problems(&self) -> Vec<String> {
        self.state.problems.lock().unwrap().clone()
    }
}
