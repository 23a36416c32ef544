//! A burst of signed provider events (API.md §16.2) beside a mint scenario: Resend's
//! Standard Webhooks, a hard bounce to a new recipient each, posted at a fixed rate to a
//! second tenant of the same instance — the load the mints must not feel (docs/benchmarks.md,
//! "Provider events beside mints").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{write_request, Conn};

/// Connections posting events at once (enough for 1,000/s at ~50 ms a request).
const WORKERS: u64 = 64;

pub const EVENTS_SECRET: &str = "whsec_YmVuY2gtZXZlbnRzLXNpZ25pbmctc2VjcmV0LTAwMQ==";

/// The tenant the events are for: a relay like the bench tenant's, and Resend as its
/// (fallback) email provider holding the events secret. Answers its id.
pub async fn events_tenant(c: &mut Conn, admin: &str, smtp_port: u16) -> String {
    let (s, body) = c
        .request(
            "POST",
            "/v1/tenants",
            admin,
            json!({"name": "events", "smtp": {"host": "127.0.0.1", "port": smtp_port,
                "username": otpmint::testkit::smtp::SMTP_USER, "password": otpmint::testkit::smtp::SMTP_PASS,
                "from": "Bench <bench@bench.example>"}})
            .to_string()
            .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (id, sk) = (
        v["id"].as_str().unwrap().to_string(),
        v["secret_key"].as_str().unwrap().to_string(),
    );
    let (s, body) = c
        .request(
            "PUT",
            "/v1/tenant/providers/email",
            &sk,
            json!({"kind": "resend", "use": "fallback", "api_key": "re_bench_unused",
                "from": "Bench <bench@bench.example>", "events_secret": EVENTS_SECRET})
            .to_string()
            .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    id
}

/// What a burst did.
pub struct Burst {
    pub sent: u64,
    pub accepted: u64,
    pub seconds: f64,
}

/// `count` signed events for `tenant`, each a whole HTTP request: made before the burst, so
/// the generator's share of the two cores during the run is only sending them (signing them
/// there cost ~0.12 ms of CPU an event, taken from the mints being measured).
pub fn signed_requests(tenant: &str, count: u64) -> Vec<Vec<u8>> {
    let key = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        EVENTS_SECRET.trim_start_matches("whsec_"),
    )
    .unwrap();
    let path = format!("/v1/events/resend/{tenant}");
    let ts = chrono::Utc::now().timestamp();
    (0..count)
        .map(|i| {
            let body = json!({"type": "email.bounced", "created_at": "2026-11-24T12:00:00.000Z",
                "data": {"email_id": format!("em-{i}"), "to": [format!("bounce-{i}@bench.example")],
                    "bounce": {"type": "Permanent"}}})
            .to_string()
            .into_bytes();
            let id = format!("msg_{i}");
            let sig = otpmint::outbound::signature(&key, &id, ts, &body);
            let mut req = Vec::with_capacity(512);
            let ts = ts.to_string();
            let headers = [
                ("svix-id", id.as_str()),
                ("svix-timestamp", ts.as_str()),
                ("svix-signature", sig.as_str()),
            ];
            write_request(&mut req, "POST", &path, &headers, &body).unwrap();
            req
        })
        .collect()
}

/// Post `requests` in order at `rate` per second until `stop` (or until they run out), from
/// `WORKERS` keep-alive connections.
pub async fn burst(port: u16, requests: Vec<Vec<u8>>, rate: u32, stop: Arc<AtomicBool>) -> Burst {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let per = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let (next, accepted, stop, requests) = (
            Arc::clone(&next),
            Arc::clone(&accepted),
            Arc::clone(&stop),
            Arc::clone(&requests),
        );
        tasks.push(tokio::spawn(async move {
            let Ok(mut conn) = Conn::open(port).await else {
                return;
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep_until((start + per * i as u32).into()).await;
                let Some(req) = requests.get(i as usize) else {
                    break;
                };
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match conn.exchange(req).await {
                    Ok((200, _)) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    // A broken connection: a new one for the next event.
                    Err(_) => match Conn::open(port).await {
                        Ok(c) => conn = c,
                        Err(_) => break,
                    },
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    Burst {
        sent: next
            .load(Ordering::Relaxed)
            .saturating_sub(WORKERS)
            .min(requests.len() as u64),
        accepted: accepted.load(Ordering::Relaxed),
        seconds,
    }
}
