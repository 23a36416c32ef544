//! Settings: the layered load (embedded defaults → `--config FILE` → `OTPMINT__…` env) and validation.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

mod error;
mod load;
mod secrets;
#[cfg(test)]
mod tests;
mod typed;
mod validate;

pub use error::ConfigError;
use error::{explained, without_values};

/// The choices of the settings' enum named `name` (as the config library names it).
fn choices_of(name: &str) -> Option<&'static [&'static str]> {
    use error::variants_of;
    [
        variants_of::<CpuScheduling>(),
        variants_of::<RegistrationMode>(),
        variants_of::<HashAlgorithm>(),
        variants_of::<LogFormat>(),
    ]
    .into_iter()
    .find(|(n, _)| *n == name)
    .map(|(_, v)| v)
}
pub use secrets::url_without_password;

/// The embedded defaults (config/default.toml).
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
const DEFAULT_KEY_FILE: &str = "data/master.key";
const ENV_PREFIX: &str = "OTPMINT__";

/// Keys whose environment value is a list: comma-separated, or a TOML array.
const LIST_KEYS: &[&str] = &[
    "server.trusted_proxies",
    "crypto.previous_master_keys",
    "smtp.allowed_ports",
    "smtp.extra_root_certificates",
    "webhooks.extra_root_certificates",
    "delivery.sns_certificate_hosts",
];

/// An address or CIDR range: `10.0.0.0/8`, `::1`, `192.0.2.7`.
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// A `log.level` value.
pub fn parse_level(s: &str) -> Option<tracing::Level> {
    match s.to_ascii_lowercase().as_str() {
        "error" => Some(tracing::Level::ERROR),
        "warn" => Some(tracing::Level::WARN),
        "info" => Some(tracing::Level::INFO),
        "debug" => Some(tracing::Level::DEBUG),
        "trace" => Some(tracing::Level::TRACE),
        _ => None,
    }
}

/// What a secret that is set is shown as (`config check`).
pub(crate) const REDACTED: &str = "<redacted>";

fn redact<S: Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    if s.expose_secret().is_empty() {
        ser.serialize_str("")
    } else {
        ser.serialize_str(REDACTED)
    }
}

/// A database URL with any password replaced (`postgres://user:<redacted>@host/db`).
fn redact_url_password<S: Serializer>(url: &str, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&url_without_password(url))
}

fn redact_list<S: Serializer>(v: &[SecretString], ser: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = ser.serialize_seq(Some(v.len()))?;
    for _ in v {
        seq.serialize_element(REDACTED)?;
    }
    seq.end()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub crypto: CryptoSettings,
    pub admin: TokenSettings,
    pub registration: RegistrationSettings,
    pub otp: OtpSettings,
    pub hashing: HashingSettings,
    pub limits: LimitSettings,
    pub smtp: SmtpSettings,
    pub webhooks: WebhookSettings,
    pub delivery: DeliverySettings,
    pub templates: TemplateSettings,
    pub stats: StatsSettings,
    pub compat: CompatSettings,
    pub audit: AuditSettings,
    pub metrics: TokenSettings,
    pub log: LogSettings,
    #[serde(default)]
    pub dns: DnsSettings,
}

/// DNS look-ups of the domain check (API.md §16.4).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSettings {
    /// `IP:PORT` of the resolver to ask; empty: the system's (`/etc/resolv.conf`).
    #[serde(default)]
    pub resolver: String,
}

impl DnsSettings {
    /// The resolver to ask, `None` for the system's (the value was checked at load).
    pub fn resolver_addr(&self) -> Option<std::net::SocketAddr> {
        self.resolver.parse().ok()
    }
}

impl Settings {
    /// The longest one delivery attempt can take: its deadline is the first transport's
    /// (`smtp.timeout_seconds` or `delivery.http_timeout_seconds`).
    pub fn attempt_seconds(&self) -> u64 {
        self.smtp
            .timeout_seconds
            .max(self.delivery.http_timeout_seconds)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: String,
    pub trusted_proxies: Vec<String>,
    pub workers: usize,
    pub shutdown_grace_seconds: u64,
    pub request_timeout_seconds: u64,
    pub max_connections_per_worker: usize,
    pub scheduling: CpuScheduling,
    /// Where people reach the magic links (API.md §14), e.g. `https://otp.example.com`;
    /// empty: links are off.
    pub public_url: String,
}

/// How the server's threads are scheduled by Linux (`server.scheduling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuScheduling {
    /// `SCHED_BATCH`: a thread that wakes up does not preempt one that is running; it runs
    /// at the next scheduler tick instead. Under a full CPU the work of many requests then
    /// runs in one go rather than one thread switch per step of each request.
    Batch,
    /// `SCHED_OTHER`, the Linux default.
    Normal,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Shown without its password (`config check`): a URL may carry credentials.
    #[serde(serialize_with = "redact_url_password")]
    pub url: String,
    /// A file of one line, `url` (API.md §18.4); read at start and on SIGHUP.
    #[serde(default)]
    pub url_file: String,
    pub pool_size: u32,
    /// PEM file of CA certificates trusted (besides the system roots) for PostgreSQL with
    /// `sslmode=verify-full`; empty for none.
    pub tls_ca_file: String,
    /// PostgreSQL: how long to wait to connect or for a pooled connection.
    pub timeout_seconds: u64,
    /// PostgreSQL: how long `serve`, `migrate` and `migrate-store` wait at start for a server
    /// that is not up yet (refusing connections, unreachable, or starting up); 0: fail at once.
    pub start_wait_seconds: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoSettings {
    #[serde(serialize_with = "redact")]
    pub master_key: SecretString,
    pub master_key_file: String,
    #[serde(serialize_with = "redact_list")]
    pub previous_master_keys: Vec<SecretString>,
}

/// A bearer token the server checks (`[admin]`, `[metrics]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    #[serde(serialize_with = "redact")]
    pub token: SecretString,
    /// A file of one line, `token`; read at start and on SIGHUP.
    #[serde(default)]
    pub token_file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    Open,
    Admin,
    Closed,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationSettings {
    pub mode: RegistrationMode,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtpSettings {
    pub code_length: u32,
    pub ttl_seconds: u32,
    pub max_attempts: u32,
    pub retention_seconds: u64,
    /// New codes one key may be sent after its first (API.md §13.3).
    pub max_resends: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HashingSettings {
    /// How codes are hashed (API.md §19.1); stored hashes of the other kind keep verifying.
    #[serde(default)]
    pub algorithm: HashAlgorithm,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub max_concurrent: usize,
    pub max_queue: usize,
}

/// `hashing.algorithm`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum HashAlgorithm {
    /// argon2id keyed with the pepper, on the hashing threads.
    #[default]
    #[serde(rename = "argon2id")]
    Argon2id,
    /// HMAC-SHA256 with a key derived from the pepper (HKDF), computed in place.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub per_ip_per_second: u32,
    pub per_ip_burst: u32,
    pub recipient_max_sends: u32,
    pub recipient_window_seconds: u64,
    pub resend_cooldown_seconds: u64,
    pub tenant_max_sends_per_hour: u32,
    pub recipient_max_failures: u32,
    /// Test mints per tenant per hour (API.md §13.1); 0 = off.
    pub test_sends_per_hour: u32,
    /// Wrong guesses of a test recipient's fixed code, over all its keys, after which the
    /// entry turns inert until it is stored again (API.md §17.3); 0 = no limit.
    pub test_code_max_failures: u32,
    /// SMS per tenant per hour to one range (the number without its last 3 digits,
    /// API.md §17.1); 0 = off.
    pub sms_range_per_hour: u32,
    /// SMS per tenant per hour to one country whose code was not verified; 0 = off.
    pub sms_unverified_per_country_per_hour: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub timeout_seconds: u64,
    pub allowed_ports: Vec<u16>,
    pub allow_private_hosts: bool,
    pub allow_plaintext: bool,
    pub extra_root_certificates: Vec<PathBuf>,
    pub pool_size: usize,
    pub max_connections_per_tenant: u32,
    pub initial_connections: u32,
    pub max_connections_limit: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub allow_private_hosts: bool,
    pub allow_plaintext: bool,
    pub timeout_seconds: u64,
    pub extra_root_certificates: Vec<PathBuf>,
    pub max_in_flight_per_tenant: u32,
    /// Webhook requests in flight per process, all tenants together (API.md §17.7).
    pub max_in_flight: u32,
}

/// Transports beyond one relay (API.md §12).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Transient failures in a row after which a relay is skipped (its breaker opens).
    pub breaker_failures: u32,
    /// How long an open breaker skips its relay before one message probes it.
    pub breaker_seconds: u64,
    /// Bound on one request to a tenant's HTTP transport, a provider or a token endpoint.
    pub http_timeout_seconds: u64,
    /// SMTP sessions, HTTP transport and provider requests in flight in this process, all
    /// tenants together (API.md §19.3); beyond it work waits.
    pub max_sessions: u32,
    /// Hosts an SNS signing certificate or subscription URL may be fetched from besides
    /// `sns.<region>.amazonaws.com` (API.md §16.2; tests).
    #[serde(default)]
    pub sns_certificate_hosts: Vec<String>,
    /// Operator overrides of the providers' base URLs (API.md §15.2), by kind:
    /// `{postmark = "https://host:port"}`; otpmint appends each API's documented path.
    #[serde(default)]
    pub provider_base_urls: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSettings {
    pub max_locales_per_tenant: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatsSettings {
    /// Days of statistics kept (API.md §13.4).
    pub retention_days: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompatSettings {
    pub otpmint: bool,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    pub retention_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for a person when stderr is a terminal, JSON otherwise.
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// Where the database lives: a SQLite file, or a PostgreSQL server (the URL as given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    Sqlite(PathBuf),
    Postgres(String),
}
