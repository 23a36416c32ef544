//! The benchmark's command line.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Load benchmark for otpmint (see docs/benchmarks.md)")]
pub struct Args {
    /// Seconds per scenario and concurrency
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Concurrency levels
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub concurrency: Vec<usize>,
    /// Scenarios to run
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mint,mint-async,verify-wrong,verify-right,compat-mint,compat-verify-wrong,compat-verify-right"
    )]
    pub scenarios: Vec<String>,
    /// argon2id memory (KiB); default: the server's default
    #[arg(long)]
    pub memory_kib: Option<u32>,
    /// argon2id iterations; default: the server's default
    #[arg(long)]
    pub iterations: Option<u32>,
    /// The server's `hashing.algorithm` (argon2id | hmac-sha256); default: the server's default
    #[arg(long)]
    pub hashing_algorithm: Option<String>,
    /// Rows to pre-fill before the run: stored codes (spread over --prefill-tenants tenants)
    #[arg(long, default_value_t = 0)]
    pub prefill_codes: u64,
    #[arg(long, default_value_t = 0)]
    pub prefill_tenants: u64,
    /// Instead of load: give the bench tenant this many codes over 400 days (with their
    /// rollups) and time `GET /v1/tenant/stats` (docs/benchmarks.md)
    #[arg(long, default_value_t = 0)]
    pub stats_codes: u64,
    /// A few seconds, tiny concurrency: proves the tool works (CI)
    #[arg(long)]
    pub smoke: bool,
    /// Per-message acceptance delays of the relay (ms) to run every scenario against; a real
    /// relay takes 50-500 ms
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub relay_delay_ms: Vec<u64>,
    /// The tenants' smtp.max_connections (the ceiling of sessions open to the relay at
    /// once); default: the server's default (32), the window adapting below it
    #[arg(long)]
    pub max_connections: Option<u32>,
    /// smtp.pool_size of the servers (idle connections kept per tenant); default: the
    /// server's default (4)
    #[arg(long)]
    pub smtp_pool_size: Option<usize>,
    /// Drive OtpMint (the Flask service) listening on 127.0.0.1:PORT instead of starting
    /// otpmint: its secret key is registered through its /reg_secretkey, then the compat-*
    /// mint scenarios run against it through the same relay (no server CPU figures)
    #[arg(long)]
    pub otpmint_port: Option<u16>,
    /// Seconds of hashing-floor sampling before and after each run (the machine's speed
    /// drifts: a ratio needs the floor of its own minute)
    #[arg(long, default_value_t = 1.0)]
    pub floor_seconds: f64,
    /// Split each run's load into this many equal slices with a floor sample between each
    /// (and before the first and after the last): the ratio then divides by a floor taken
    /// throughout the run, not only at its ends. For sync scenarios: with mint-async the
    /// sender goes on delivering during the samples between slices
    #[arg(long, default_value_t = 1)]
    pub slices: u32,
    /// A PostgreSQL server (postgres://…, a role that may create databases): the servers
    /// under test store in a fresh database on it instead of SQLite
    #[arg(long)]
    pub database: Option<String>,
    /// Server processes on the one database (needs --database); the load is spread over
    /// them round-robin, as a load balancer would
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// `smtp`; `http`: the bench tenant delivers through an HTTP receiver; `http-sms`: the
    /// mints are text messages to German mobile numbers, through an HTTP receiver that is
    /// the tenant's fallback (the relay its primary); `provider:<kind>`
    /// (postmark, resend, sendgrid, mailgun, ses, twilio, vonage): through a fake of that
    /// provider's API (both the mint scenarios only; --relay-delay-ms delays their answers);
    /// `smtp-oauth2`: the relay with XOAUTH2 and tokens from a test token endpoint (the
    /// results count the token requests)
    #[arg(long, default_value = "smtp")]
    pub transport: String,
    /// With `--transport smtp-oauth2`: the access tokens' lifetime (`expires_in`); otpmint
    /// uses a token until 60 s before it expires
    #[arg(long, default_value_t = 3600)]
    pub token_lifetime_seconds: u64,
    /// Signed provider events per second posted to a second tenant of the same instance
    /// during the `…+events` scenarios (`mint+events`, `mint-async+events`)
    #[arg(long, default_value_t = 1000)]
    pub event_rate: u32,
    /// Instead of load: a chaos soak of this many seconds of faults (docs/reliability.md);
    /// with --database, --instances processes (at least 2) on PostgreSQL behind a proxy that
    /// cuts, else one on SQLite. Exit status 1 when the checker finds a violation
    #[arg(long)]
    pub soak: Option<u64>,
    /// The soak's concurrent clients
    #[arg(long, default_value_t = 12)]
    pub soak_workers: usize,
    /// How long the soak's relays take to accept each message (a real relay takes 50-500 ms:
    /// sends are in flight when an instance is killed)
    #[arg(long, default_value_t = 100)]
    pub soak_relay_delay_ms: u64,
    /// The seed of the soak's faults and load
    #[arg(long, default_value_t = 1)]
    pub soak_seed: u64,
    /// Seconds to measure the durable-write floor before and after the runs (the commits of
    /// a mint, from 64 writers, on the server's database while it idles); 0: not measured
    #[arg(long, default_value_t = 0.0)]
    pub write_floor_seconds: f64,
    /// Where to write the JSON results
    #[arg(long, default_value = "target/bench-results.json")]
    pub json: PathBuf,
    /// The otpmint binary (default: next to this one)
    #[arg(long)]
    pub server: Option<PathBuf>,
}
