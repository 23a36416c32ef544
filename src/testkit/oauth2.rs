#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! An OAuth2 token endpoint for tests (RFC 6749 §4.4 client credentials and §6 refresh),
//! over HTTPS on loopback: it checks each request as the RFC and Microsoft's and Google's
//! endpoints take it (form-encoded POST, `client_id` and `client_secret` in the body), issues
//! random access tokens with a lifetime the test sets, can rotate refresh tokens, answer
//! `invalid_grant` or 503, and tells the test SMTP server which tokens are valid.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::http::{HttpReceiver, Reply, Request};
use super::smtp::TokenCheck;

pub const CLIENT_ID: &str = "otpmint-test-client";
pub const CLIENT_SECRET: &str = "client-s3cret-never-logged";
pub const REFRESH_TOKEN: &str = "refresh-token-one-never-logged";

/// How the endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    Normal,
    /// 400 `invalid_grant` to every request.
    InvalidGrant,
    /// 503 to every request.
    Unavailable,
    /// 400 with the client secret it was sent as the `error`, its letters, digits and `_`
    /// only (an endpoint that echoes, in the shape of an error code).
    EchoSecret,
    /// Tokens as usual, with an empty `refresh_token` in every answer (a refresh token that
    /// is no token; the one sent keeps working).
    EmptyRefreshToken,
    /// 200 with a JSON object that holds no `access_token` (an address that is not a token
    /// endpoint).
    NoToken,
}

struct State {
    mode: Mutex<TokenMode>,
    /// Access tokens issued, until when they are good.
    issued: Mutex<HashMap<String, Instant>>,
    /// Refresh tokens that work now.
    refresh: Mutex<HashSet<String>>,
    /// The client's secrets that work ([`CLIENT_SECRET`], and those added).
    client_secrets: Mutex<HashSet<String>>,
    rotate: AtomicBool,
    expires_in: AtomicU64,
    requests: AtomicUsize,
    /// What was wrong with requests, as the endpoint saw it.
    problems: Mutex<Vec<String>>,
    user: String,
}

pub struct TokenServer {
    pub rx: HttpReceiver,
    state: Arc<State>,
}

fn token() -> String {
    crate::domain::keys::random_id(32)
}

fn form(req: &Request) -> HashMap<String, String> {
    form_urlencoded::parse(&req.body).into_owned().collect()
}

fn answer(st: &State, req: &Request) -> Reply {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let mut problems = Vec::new();
    if req.method != "POST" {
        problems.push(format!("method {}", req.method));
    }
    if req.header("content-type") != Some("application/x-www-form-urlencoded") {
        problems.push(format!("content-type {:?}", req.header("content-type")));
    }
    let f = form(req);
    match *st.mode.lock().unwrap() {
        TokenMode::NoToken => return Reply::json(200, json!({"status": "ok"})),
        TokenMode::Unavailable => {
            return Reply::json(503, json!({"error": "temporarily_unavailable"}))
        }
        TokenMode::InvalidGrant => {
            return Reply::json(
                400,
                json!({"error": "invalid_grant", "error_description": "AADSTS70000: the grant is expired or revoked"}),
            )
        }
        TokenMode::EchoSecret => {
            let mut echoed = f.get("client_secret").cloned().unwrap_or_default();
            echoed.retain(|c| c.is_ascii_alphanumeric() || c == '_');
            return Reply::json(400, json!({"error": echoed}));
        }
        TokenMode::Normal | TokenMode::EmptyRefreshToken => {}
    }
    if f.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || !f
            .get("client_secret")
            .is_some_and(|c| st.client_secrets.lock().unwrap().contains(c))
    {
        st.problems.lock().unwrap().extend(problems);
        return Reply::json(401, json!({"error": "invalid_client"}));
    }
    let mut new_refresh = None;
    match f.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some("refresh_token") => {
            let rt = f.get("refresh_token").cloned().unwrap_or_default();
            let mut valid = st.refresh.lock().unwrap();
            if !valid.contains(&rt) {
                return Reply::json(400, json!({"error": "invalid_grant"}));
            }
            if st.rotate.load(Ordering::SeqCst) {
                // The old one stops working, as a provider that rotates may do.
                valid.remove(&rt);
                let next = format!("refresh-{}", token());
                valid.insert(next.clone());
                new_refresh = Some(next);
            }
        }
        other => problems.push(format!("grant_type {other:?}")),
    }
    st.problems.lock().unwrap().extend(problems);
    let access = format!("at-{}", token());
    let lifetime = st.expires_in.load(Ordering::SeqCst);
    st.issued.lock().unwrap().insert(
        access.clone(),
        // (A lifetime past the clock's end: good for as long as the test runs.)
        Instant::now()
            .checked_add(Duration::from_secs(lifetime))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365)),
    );
    let mut body = json!({"access_token": access, "token_type": "Bearer", "expires_in": lifetime});
    if let Some(rt) = new_refresh {
        body["refresh_token"] = json!(rt);
    }
    if *st.mode.lock().unwrap() == TokenMode::EmptyRefreshToken {
        body["refresh_token"] = json!("");
    }
    Reply::json(200, body)
}

impl TokenServer {
    /// An endpoint issuing tokens for `user` (the relay's SMTP user name).
    pub async fn start(user: &str) -> TokenServer {
        let state = Arc::new(State {
            mode: Mutex::new(TokenMode::Normal),
            issued: Mutex::new(HashMap::new()),
            refresh: Mutex::new(HashSet::from([REFRESH_TOKEN.to_string()])),
            client_secrets: Mutex::new(HashSet::from([CLIENT_SECRET.to_string()])),
            rotate: AtomicBool::new(false),
            expires_in: AtomicU64::new(3600),
            requests: AtomicUsize::new(0),
            problems: Mutex::new(Vec::new()),
            user: user.to_string(),
        });
        let st = Arc::clone(&state);
        let rx = HttpReceiver::start_with(true, Arc::new(move |req| answer(&st, req))).await;
        TokenServer { rx, state }
    }

    pub fn url(&self) -> String {
        self.rx.url("/oauth2/v2.0/token")
    }

    /// What the SMTP server accepts: a token issued here, not expired, for the user.
    pub fn check(&self) -> TokenCheck {
        let st = Arc::clone(&self.state);
        Arc::new(move |user, token| {
            user == st.user
                && st
                    .issued
                    .lock()
                    .unwrap()
                    .get(token)
                    .is_some_and(|until| Instant::now() < *until)
        })
    }

    pub fn set_mode(&self, mode: TokenMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Take `secret` as the client's secret too (a second secret, as an app registration
    /// may hold while its secret is changed).
    pub fn add_client_secret(&self, secret: &str) {
        self.state
            .client_secrets
            .lock()
            .unwrap()
            .insert(secret.to_string());
    }

    /// Issue a new refresh token with every refresh (the old one stops working).
    pub fn rotate_refresh_tokens(&self, on: bool) {
        self.state.rotate.store(on, Ordering::SeqCst);
    }

    pub fn set_expires_in(&self, secs: u64) {
        self.state.expires_in.store(secs, Ordering::SeqCst);
    }

    /// Every access token issued so far stops working (revoked).
    pub fn revoke_access_tokens(&self) {
        self.state.issued.lock().unwrap().clear();
    }

    /// Every access token issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().keys().cloned().collect()
    }

    /// Requests received.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The grants of the requests received, in order.
    pub fn grants(&self) -> Vec<String> {
        self.rx
            .requests()
            .iter()
            .map(|r| form(r).get("grant_type").cloned().unwrap_or_default())
            .collect()
    }

    /// What was wrong with requests (empty when every one was as the RFC has it).
    pub fn problems(&self) -> Vec<String> {
        self.state.problems.lock().unwrap().clone()
    }
}
