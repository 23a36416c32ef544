//! What a run needs before it starts: the hashing floor, pre-minted codes, wrong guesses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otpmint::config::HashingSettings;
use otpmint::crypto::hashing::Hasher;
use otpmint::testkit::smtp::SmtpServer;
use serde_json::{json, Value};

use super::*;

/// Measure the hashing floor: argon2id hashes per second on all cores, through otpmint's
/// own hashing pool with the server's parameters.
pub async fn hashing_floor(args: &Args, seconds: f64) -> f64 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let settings = HashingSettings {
        algorithm: otpmint::config::HashAlgorithm::Argon2id,
        memory_kib: args.memory_kib.unwrap_or(4096),
        iterations: args.iterations.unwrap_or(1),
        parallelism: 1,
        max_concurrent: cores,
        max_queue: cores * 8,
    };
    let hasher = Hasher::new(&settings, cores, &[7u8; 32]).unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..cores * 4 {
        let (h, d) = (hasher.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if h.hash("123456").await.is_ok() {
                    d.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Mint `n` codes (native or compat) and return (key, code) pairs read from the received mail.
pub async fn premint(
    port: u16,
    smtp: &SmtpServer,
    sk: &str,
    compat: bool,
    n: u64,
    tag: &str,
) -> Vec<(String, String)> {
    smtp.drain();
    let keys = Arc::new(Mutex::new(Vec::new()));
    let sk = sk.to_string();
    let tag = tag.to_string();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (keys, sk, tag, next) = (keys.clone(), sk.clone(), tag.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(port).await.unwrap();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let email = format!("pre-{tag}-{i}@bench.example");
                let (status, body) = if compat {
                    c.request(
                        "POST",
                        "/otp",
                        "",
                        json!({"mail": email, "secretKey": sk})
                            .to_string()
                            .as_bytes(),
                    )
                    .await
                    .unwrap()
                } else {
                    c.request(
                        "POST",
                        "/v1/otp",
                        &sk,
                        json!({"email": email}).to_string().as_bytes(),
                    )
                    .await
                    .unwrap()
                };
                if status == 200 || status == 201 {
                    let key = if compat {
                        String::from_utf8_lossy(&body).to_string()
                    } else {
                        serde_json::from_slice::<Value>(&body).unwrap()["shareable_key"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    };
                    keys.lock().unwrap().push((email, key));
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let codes: HashMap<String, String> = smtp
        .drain()
        .into_iter()
        .map(|m| (m.to.first().cloned().unwrap_or_default(), m.code()))
        .collect();
    let keys = std::mem::take(&mut *keys.lock().unwrap());
    keys.into_iter()
        .filter_map(|(e, k)| codes.get(&e).map(|c| (k, c.clone())))
        .collect()
}

pub fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| char::from(b'0' + ((c as u8 - b'0' + 1) % 10)))
        .collect()
}
