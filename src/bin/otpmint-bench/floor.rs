//! The durable-write floor (issue 35): with HMAC-keyed codes hashing costs almost nothing, and
//! a mint is bound by its commit. This measures how many mints' commits the store takes per
//! second — the same `CodeStore::insert_code` a mint runs (a code and its message in one
//! durable transaction, SQLite's group commit or PostgreSQL's), from 64 writers at once, on the
//! server's own database while it idles — so a mint's rate can be read as a share of it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use otpmint::domain::delivery::DeliveryMode;
use otpmint::domain::keys::{CodeApi, TenantId};
use otpmint::storage::{CodeStore, Lease, NewChallenge, NewOutbox, Queued};
use rand::RngCore;

/// Where the server under test stores.
pub enum Store {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

const WRITERS: usize = 64;

/// Commits per second of `insert_code` for `tenant` over `seconds`.
pub fn write_floor(store: &Store, tenant: &str, seconds: f64) -> f64 {
    let codes: Arc<dyn CodeStore + Send + Sync> = match store {
        Store::Sqlite(path) => {
            Arc::new(otpmint::storage::sqlite::SqliteStore::open(path, 8).unwrap())
        }
        Store::Postgres(url) => Arc::new(
            otpmint::storage::postgres::PgStore::open(&otpmint::storage::postgres::PgOptions {
                url: url.clone(),
                pool_size: 16,
                tls_ca_file: None,
                timeout: Duration::from_secs(10),
                start_wait: Duration::ZERO,
            })
            .unwrap(),
        ),
    };
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (codes, done, stop) = (codes.clone(), done.clone(), stop.clone());
            let tenant = TenantId::from_trusted(tenant.to_string());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let now = chrono::Utc::now().timestamp_millis();
                    let mut digest = vec![0u8; 32];
                    rand::rngs::OsRng.fill_bytes(&mut digest);
                    let email = format!("floor-{w}-{i}@bench.example");
                    i += 1;
                    let c = NewChallenge {
                        key_digest: digest,
                        tenant_id: tenant.clone(),
                        flavor: CodeApi::Native,
                        email: email.clone(),
                        email_canonical: email.clone(),
                        purpose: otpmint::domain::purpose::Purpose::parse(None).unwrap(),
                        code_hash: "$hmac-sha256$v=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
                        max_attempts: 5,
                        code_length: 6,
                        created_at: now,
                        expires_at: now + 600_000,
                        // Sync rows leased by nobody's sender: no instance ever sends them.
                        delivery_mode: DeliveryMode::Sync,
                        locale: otpmint::domain::locale::Locale::parse("en"),
                        channel: otpmint::domain::recipient::Channel::Email,
                        link: None,
                        staged: None,
                    };
                    let m = NewOutbox {
                        recipient: email,
                        payload: vec![0u8; 600],
                        lease: Some(Lease {
                            owner: "write-floor".into(),
                            for_ms: 3_600_000,
                        }),
                        unstarted: false,
                        channel: otpmint::domain::recipient::Channel::Email,
                    };
                    let queued = Queued {
                        outbox: m,
                        quota: None,
                    };
                    if let Ok(Ok(())) = codes.insert_code(&c, &queued, now) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in threads {
        t.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / elapsed
}
