//! The soak's load: workers minting (sync and async), verifying with right and wrong codes,
//! resending and guessing in parallel, over every live instance; each answer recorded for
//! the checker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otpmint::testkit::smtp::SmtpServer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::super::client::Conn;

/// A tenant of the soak: its secret key and the relay it sends through.
#[derive(Clone)]
pub struct Tenant {
    pub sk: String,
    /// Index into the relays (0: the one that misbehaves).
    pub relay: usize,
    pub max_attempts: u64,
}

/// A code the server answered 201 or 202 for.
#[derive(Clone)]
pub struct Minted {
    pub key: String,
    pub tenant: usize,
    pub recipient: String,
    pub status: u16,
}

/// One answer the load got: when (seconds into the run), which operation, its status and
/// its problem code.
#[derive(Clone)]
pub struct Answer {
    pub at: f64,
    pub op: &'static str,
    pub status: u16,
    pub code: String,
    pub tenant: usize,
}

#[derive(Default)]
pub struct Record {
    pub minted: Vec<Minted>,
    /// Per key: the codes sent to verify and the status each got (None: no answer).
    pub verifies: HashMap<String, Vec<(String, Option<u16>)>>,
    pub answers: Vec<Answer>,
    pub transport_errors: u64,
}

pub struct Load {
    pub record: Mutex<Record>,
    pub tenants: Vec<Tenant>,
    pub relays: Vec<Arc<SmtpServer>>,
    pub ports: Vec<u16>,
    pub started: Instant,
    pub stop: AtomicBool,
    next: AtomicU64,
    /// Codes received by the relays so far, by recipient (refreshed by [`Load::index`]).
    inbox: Mutex<HashMap<String, Vec<String>>>,
}

/// What workers do, in parts of 100.
const MINT: u32 = 40;
const VERIFY: u32 = 75;
const RESEND: u32 = 85;
const GUESS: u32 = 90;

impl Load {
    pub fn new(tenants: Vec<Tenant>, relays: Vec<Arc<SmtpServer>>, ports: Vec<u16>) -> Load {
        Load {
            record: Mutex::new(Record::default()),
            tenants,
            relays,
            ports,
            started: Instant::now(),
            stop: AtomicBool::new(false),
            next: AtomicU64::new(0),
            inbox: Mutex::new(HashMap::new()),
        }
    }

    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Every code each recipient was sent, as the relays received them.
    pub fn received(&self) -> HashMap<String, Vec<String>> {
        let mut by: HashMap<String, Vec<String>> = HashMap::new();
        for relay in &self.relays {
            for m in relay.messages() {
                for to in &m.to {
                    by.entry(to.clone()).or_default().push(m.code());
                }
            }
        }
        by
    }

    /// Refresh the workers' view of the relays' mailboxes.
    pub fn index(&self) {
        let by = self.received();
        *self.inbox.lock().unwrap() = by;
    }

    fn codes_of(&self, recipient: &str) -> Vec<String> {
        self.inbox
            .lock()
            .unwrap()
            .get(recipient)
            .cloned()
            .unwrap_or_default()
    }

    fn pick(&self, rng: &mut StdRng) -> Option<Minted> {
        let r = self.record.lock().unwrap();
        if r.minted.is_empty() {
            return None;
        }
        // Mostly recent codes: those are the ones people verify.
        let n = r.minted.len();
        let back = rng.gen_range(0..n.min(200));
        Some(r.minted[n - 1 - back].clone())
    }

    fn answer(&self, op: &'static str, tenant: usize, status: u16, body: &[u8]) {
        let code = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_string))
            .unwrap_or_default();
        let at = self.now();
        self.record.lock().unwrap().answers.push(Answer {
            at,
            op,
            status,
            code,
            tenant,
        });
    }

    /// A request to any live instance, starting with `conn`'s; `None` after the instances
    /// gave no answer (each failure counted).
    async fn call(
        &self,
        conn: &mut Option<Conn>,
        port: &mut usize,
        (method, path, auth, body): (&str, &str, &str, &[u8]),
    ) -> Option<(u16, Vec<u8>)> {
        for _ in 0..self.ports.len() * 2 {
            if conn.is_none() {
                *conn = Conn::open(self.ports[*port % self.ports.len()]).await.ok();
            }
            if let Some(c) = conn.as_mut() {
                match tokio::time::timeout(
                    Duration::from_secs(20),
                    c.request(method, path, auth, body),
                )
                .await
                {
                    Ok(Ok(answer)) => return Some(answer),
                    _ => self.record.lock().unwrap().transport_errors += 1,
                }
            }
            *conn = None;
            *port += 1;
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// One worker, until [`Load::stop`].
    pub async fn worker(self: Arc<Self>, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut conn = None;
        let mut port = seed as usize;
        while !self.stop.load(Ordering::Relaxed) {
            let roll = rng.gen_range(0..100);
            if roll < MINT {
                self.mint(&mut rng, &mut conn, &mut port).await;
            } else if roll < VERIFY {
                self.verify(&mut rng, &mut conn, &mut port).await;
            } else if roll < RESEND {
                self.resend(&mut rng, &mut conn, &mut port).await;
            } else if roll < GUESS {
                self.guess_in_parallel(&mut rng).await;
            } else {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..20))).await;
            }
        }
    }

    async fn mint(&self, rng: &mut StdRng, conn: &mut Option<Conn>, port: &mut usize) {
        let tenant = rng.gen_range(0..self.tenants.len());
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let recipient = format!("soak-{n}@t{tenant}.soak.example");
        let delivery = if rng.gen_bool(0.5) { "sync" } else { "async" };
        let body = json!({"email": recipient, "delivery": delivery}).to_string();
        let sk = self.tenants[tenant].sk.clone();
        let Some((status, answer)) = self
            .call(conn, port, ("POST", "/v1/otp", &sk, body.as_bytes()))
            .await
        else {
            return;
        };
        self.answer("mint", tenant, status, &answer);
        if status == 201 || status == 202 {
            let key = serde_json::from_slice::<Value>(&answer)
                .ok()
                .and_then(|v| v["shareable_key"].as_str().map(str::to_string))
                .unwrap_or_default();
            self.record.lock().unwrap().minted.push(Minted {
                key,
                tenant,
                recipient,
                status,
            });
        }
    }

    async fn verify(&self, rng: &mut StdRng, conn: &mut Option<Conn>, port: &mut usize) {
        let Some(m) = self.pick(rng) else {
            return;
        };
        let codes = self.codes_of(&m.recipient);
        let Some(right) = codes.last() else {
            return;
        };
        // Now and then a wrong guess first, as people mistype.
        let otp = if rng.gen_bool(0.3) {
            super::wrong_for(&codes)
        } else {
            right.clone()
        };
        self.verify_with(&m, &otp, conn, port).await;
    }

    async fn verify_with(&self, m: &Minted, otp: &str, conn: &mut Option<Conn>, port: &mut usize) {
        let sk = self.tenants[m.tenant].sk.clone();
        let body = json!({"shareable_key": m.key, "otp": otp}).to_string();
        let got = self
            .call(conn, port, ("POST", "/v1/otp/verify", &sk, body.as_bytes()))
            .await;
        if let Some((status, answer)) = &got {
            self.answer("verify", m.tenant, *status, answer);
        }
        self.record
            .lock()
            .unwrap()
            .verifies
            .entry(m.key.clone())
            .or_default()
            .push((otp.to_string(), got.map(|g| g.0)));
    }

    async fn resend(&self, rng: &mut StdRng, conn: &mut Option<Conn>, port: &mut usize) {
        let Some(m) = self.pick(rng) else {
            return;
        };
        if self.codes_of(&m.recipient).is_empty() {
            return;
        }
        let sk = self.tenants[m.tenant].sk.clone();
        let path = format!("/v1/otp/{}/resend", m.key);
        if let Some((status, answer)) = self.call(conn, port, ("POST", &path, &sk, b"")).await {
            self.answer("resend", m.tenant, status, &answer);
        }
    }

    /// More wrong guesses than the key allows, all at once on their own connections.
    async fn guess_in_parallel(&self, rng: &mut StdRng) {
        let Some(m) = self.pick(rng) else {
            return;
        };
        let codes = self.codes_of(&m.recipient);
        if codes.is_empty() {
            return;
        }
        let n = self.tenants[m.tenant].max_attempts as usize + 2;
        let mut guesses = Vec::new();
        for i in 0..n {
            let (m, otp) = (m.clone(), super::wrong_for(&codes));
            let mut port = rng.gen_range(0..self.ports.len()) + i;
            guesses.push(async move {
                let mut conn = None;
                self.verify_with(&m, &otp, &mut conn, &mut port).await;
            });
        }
        futures_util::future::join_all(guesses).await;
    }
}
