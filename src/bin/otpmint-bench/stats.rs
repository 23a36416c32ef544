//! `--stats-codes N`: how fast `GET /v1/tenant/stats` answers for a tenant with N codes
//! (API.md §13.4). The bench tenant gets N codes over the last 400 days, written straight
//! into the server's database with the rollup rows those codes' transactions would have
//! added (the same cells: every dimension, the hour of mint, the verify buckets; on
//! PostgreSQL spread over the shards for the last two days, folded before); then each
//! query shape is asked `REPEATS` times over HTTP and its latency reported.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use otpmint::domain::stats::{hour_of, CodeDims, Counted, BUCKETS};
use rand::{Rng, RngCore, SeedableRng};
use serde_json::Value;

use super::client::Conn;

const REPEATS: usize = 50;
const PURPOSES: [&str; 5] = ["login", "signup", "reset", "mfa", "change_email"];
const LOCALES: [&str; 10] = ["en", "de", "fr", "es", "it", "pt", "nl", "pl", "ja", "zh"];
const DOMAINS: u64 = 1000;
const DAY_MS: i64 = 86_400_000;

/// Where the server under test stores.
pub enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

/// A cell's counts: minted, sent, failed, verified, expired, test, then the buckets.
type Sums = [i32; 6 + BUCKETS];

/// A rollup row: (dimension, value, hour, shard) and its counts.
type Cell = ((&'static str, String, i64, i64), Sums);

/// Rows a multi-row INSERT carries.
const CHUNK: usize = 400;

/// One code as stored, and what its transactions counted.
struct Code {
    key_digest: Vec<u8>,
    email: String,
    purpose: &'static str,
    locale: &'static str,
    status: &'static str,
    created_at: i64,
    verified_at: Option<i64>,
    counted: Vec<Counted>,
}

fn code(rng: &mut rand::rngs::StdRng, i: u64, now: i64) -> Code {
    let created_at = now - rng.gen_range(0..400 * DAY_MS);
    let mut key_digest = vec![0u8; 32];
    rng.fill_bytes(&mut key_digest);
    let roll = rng.gen_range(0..100);
    let (status, verified_at, counted) = match roll {
        0..=59 => {
            let secs = rng.gen_range(3..400u64);
            (
                "verified",
                Some(created_at + secs as i64 * 1000),
                vec![Counted::Minted, Counted::Sent, Counted::Verified(secs)],
            )
        }
        60..=89 => (
            "pending",
            None,
            vec![Counted::Minted, Counted::Sent, Counted::ExpiredUnverified],
        ),
        90..=91 => ("failed", None, vec![Counted::Minted, Counted::Failed]),
        92..=98 => ("superseded", None, vec![Counted::Minted, Counted::Sent]),
        _ => ("pending", None, vec![Counted::Test]),
    };
    Code {
        key_digest,
        email: format!("u{i}@d{}.example", rng.gen_range(0..DOMAINS)),
        purpose: PURPOSES[rng.gen_range(0..PURPOSES.len())],
        locale: LOCALES[rng.gen_range(0..LOCALES.len())],
        status,
        created_at,
        verified_at,
        counted,
    }
}

fn column(c: Counted) -> usize {
    match c {
        Counted::Minted => 0,
        Counted::Sent => 1,
        Counted::Failed => 2,
        Counted::Verified(_) => 3,
        Counted::ExpiredUnverified => 4,
        Counted::Test => 5,
        // The prefill makes codes only; refusals, bounces and complaints are not codes.
        other @ (Counted::Blocked(_) | Counted::Bounced | Counted::Complained) => {
            panic!("the stats prefill does not write {other:?}")
        }
    }
}

/// A placeholder list `(…), (…)` for `rows` rows of `cols` parameters.
fn values(rows: usize, cols: usize, ph: impl Fn(usize) -> String) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=cols).map(|c| ph(r * cols + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

const CODE_COLS: &str = "key_digest, tenant_id, flavor, email, email_canonical, purpose, seq, code_hash, status, \
    attempts, max_attempts, code_length, created_at, expires_at, verified_at, delivery_mode, delivery_status, \
    delivery_attempts, locale, stats_state";
const STATS_COLS: &str = "tenant_id, dim, value, hour, shard, minted, sent, failed, verified, expired_unverified, test, \
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14";

/// Write `n` codes of `tenant` and their rollups; returns the rollup rows written.
fn prefill(db: &Db, tenant: &str, n: u64) -> usize {
    let now = chrono::Utc::now().timestamp_millis();
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    // (dim, value, hour, shard): on PostgreSQL the hours of the last two days are spread
    // over the shards as concurrent transactions spread them; older hours are folded into
    // one row each, as the server's hourly compaction leaves them.
    let sharded = matches!(db, Db::Postgres(_));
    let quiet = now - 48 * 3_600_000;
    let mut cells: HashMap<(&'static str, String, i64, i64), Sums> = HashMap::new();
    let hash = "$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let mut sink = Sink::open(db);
    let mut batch = Vec::with_capacity(CHUNK);
    for i in 0..n {
        let c = code(&mut rng, i, now);
        let dims = CodeDims::of(c.purpose, Some(c.locale), "email", &c.email);
        let shard = if sharded && c.created_at > quiet {
            rng.gen_range(0..8)
        } else {
            0
        };
        for what in &c.counted {
            for (dim, value) in dims.cells() {
                let s = cells
                    .entry((
                        dim.as_str(),
                        value.to_string(),
                        hour_of(c.created_at),
                        shard,
                    ))
                    .or_insert([0; 6 + BUCKETS]);
                s[column(*what)] += 1;
                if let Some(b) = what.bucket() {
                    s[6 + b] += 1;
                }
            }
        }
        batch.push(c);
        if batch.len() == CHUNK || i + 1 == n {
            sink.codes(tenant, &batch, hash, i + 1 - batch.len() as u64);
            batch.clear();
        }
    }
    // In the order the server writes them: hour by hour.
    let mut rows: Vec<Cell> = cells.into_iter().collect();
    rows.sort_by(|a, b| (a.0 .2, a.0 .0, &a.0 .1, a.0 .3).cmp(&(b.0 .2, b.0 .0, &b.0 .1, b.0 .3)));
    for chunk in rows.chunks(CHUNK) {
        sink.stats(tenant, chunk);
    }
    sink.finish();
    rows.len()
}

/// The database the prefill writes to, in one transaction.
enum Sink {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

impl Sink {
    fn open(db: &Db) -> Sink {
        match db {
            Db::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).unwrap();
                c.busy_timeout(Duration::from_secs(30)).unwrap();
                c.execute_batch("BEGIN").unwrap();
                Sink::Sqlite(c)
            }
            Db::Postgres(url) => {
                let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
                c.batch_execute("BEGIN").unwrap();
                Sink::Postgres(c)
            }
        }
    }

    fn run(&mut self, sql: &str, params: Vec<Box<dyn ToBoth>>) {
        match self {
            Sink::Sqlite(c) => {
                let p: Vec<&dyn rusqlite::ToSql> = params.iter().map(|p| p.sqlite()).collect();
                c.execute(sql, p.as_slice()).unwrap();
            }
            Sink::Postgres(c) => {
                let p: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p.pg()).collect();
                c.execute(sql, p.as_slice()).unwrap();
            }
        }
    }

    fn ph(&self) -> fn(usize) -> String {
        match self {
            Sink::Sqlite(_) => |i| format!("?{i}"),
            Sink::Postgres(_) => |i| format!("${i}"),
        }
    }

    fn codes(&mut self, tenant: &str, batch: &[Code], hash: &str, first_seq: u64) {
        let sql = format!(
            "INSERT INTO challenges ({CODE_COLS}) VALUES {}",
            values(batch.len(), 20, self.ph())
        );
        let mut p: Vec<Box<dyn ToBoth>> = Vec::with_capacity(batch.len() * 20);
        for (j, c) in batch.iter().enumerate() {
            p.push(Box::new(c.key_digest.clone()));
            p.push(Box::new(tenant.to_string()));
            p.push(Box::new("native".to_string()));
            p.push(Box::new(c.email.clone()));
            p.push(Box::new(c.email.clone()));
            p.push(Box::new(c.purpose.to_string()));
            p.push(Box::new((first_seq + j as u64 + 1) as i64));
            p.push(Box::new(hash.to_string()));
            p.push(Box::new(c.status.to_string()));
            p.push(Box::new(0i64));
            p.push(Box::new(5i64));
            p.push(Box::new(6i64));
            p.push(Box::new(c.created_at));
            p.push(Box::new(c.created_at + 600_000));
            p.push(Box::new(c.verified_at));
            p.push(Box::new("sync".to_string()));
            p.push(Box::new(
                if c.status == "failed" {
                    "failed"
                } else {
                    "sent"
                }
                .to_string(),
            ));
            p.push(Box::new(1i64));
            p.push(Box::new(c.locale.to_string()));
            p.push(Box::new(2i64));
        }
        self.run(&sql, p);
    }

    fn stats(&mut self, tenant: &str, rows: &[Cell]) {
        let cols = 5 + 6 + BUCKETS;
        let sql = format!(
            "INSERT INTO stats ({STATS_COLS}) VALUES {}",
            values(rows.len(), cols, self.ph())
        );
        let mut p: Vec<Box<dyn ToBoth>> = Vec::with_capacity(rows.len() * cols);
        for ((dim, value, hour, shard), sums) in rows {
            p.push(Box::new(tenant.to_string()));
            p.push(Box::new(dim.to_string()));
            p.push(Box::new(value.clone()));
            p.push(Box::new(*hour));
            p.push(Box::new(*shard));
            for s in sums {
                p.push(Box::new(*s));
            }
        }
        self.run(&sql, p);
    }

    fn finish(self) {
        match self {
            Sink::Sqlite(c) => c.execute_batch("COMMIT; ANALYZE").unwrap(),
            Sink::Postgres(mut c) => c.batch_execute("COMMIT; ANALYZE").unwrap(),
        }
    }
}

/// A parameter either driver can bind.
trait ToBoth {
    fn sqlite(&self) -> &dyn rusqlite::ToSql;
    fn pg(&self) -> &(dyn postgres::types::ToSql + Sync);
}

impl<T: rusqlite::ToSql + postgres::types::ToSql + Sync> ToBoth for T {
    fn sqlite(&self) -> &dyn rusqlite::ToSql {
        self
    }
    fn pg(&self) -> &(dyn postgres::types::ToSql + Sync) {
        self
    }
}

/// Fill, then time each query shape; prints one line per shape.
pub async fn run(port: u16, sk: &str, db: Db, codes: u64) {
    let mut c = Conn::open(port).await.unwrap();
    let (s, me) = c.request("GET", "/v1/tenant", sk, b"").await.unwrap();
    assert_eq!(s, 200);
    let tenant = serde_json::from_slice::<Value>(&me).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    eprintln!("pre-filling {codes} codes of one tenant over 400 days…");
    let t = Instant::now();
    let rollups = tokio::task::spawn_blocking(move || prefill(&db, &tenant, codes))
        .await
        .unwrap();
    eprintln!(
        "pre-filled in {:.1} s: {rollups} rollup rows",
        t.elapsed().as_secs_f64()
    );
    // A fresh connection: the server closed the idle one during the fill.
    let mut c = Conn::open(port).await.unwrap();
    println!("| query | rows answered | p50 ms | p95 ms | max ms |");
    println!("|---|---|---|---|---|");
    let now = chrono::Utc::now();
    let days_ago = |d: i64| {
        (now - chrono::Duration::days(d))
            .format("%Y-%m-%d")
            .to_string()
    };
    for q in [
        format!("granularity=day&from={}", days_ago(399)),
        format!("granularity=hour&from={}", days_ago(399)),
        format!("granularity=day&from={}&group_by=purpose", days_ago(30)),
        format!("granularity=day&from={}&group_by=locale", days_ago(90)),
        format!("granularity=day&from={}&group_by=domain", days_ago(6)),
        "granularity=hour&group_by=domain".to_string(),
    ] {
        let path = format!("/v1/tenant/stats?{q}");
        let mut times = Vec::with_capacity(REPEATS);
        let mut rows = 0;
        for _ in 0..REPEATS {
            let t = Instant::now();
            let (s, body) = c.request("GET", &path, sk, b"").await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
            rows = serde_json::from_slice::<Value>(&body).unwrap()["rows"]
                .as_array()
                .unwrap()
                .len();
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        println!(
            "| `{q}` | {rows} | {:.1} | {:.1} | {:.1} |",
            at(0.5),
            at(0.95),
            at(1.0)
        );
    }
}
