//! Settings: the layered load (embedded defaults → `--config FILE` → `OTPMINT__…` env) and validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// The embedded defaults (config/default.toml).
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");
const DEFAULT_KEY_FILE: &str = "data/master.key";
const ENV_PREFIX: &str = "OTPMINT__";

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "server.trusted_proxies",
    "crypto.previous_master_keys",
    "smtp.allowed_ports",
    "smtp.extra_root_certificates",
    "webhooks.extra_root_certificates",
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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration error in {source_name}: {message}")]
    Load {
        source_name: String,
        message: String,
    },
    #[error("configuration error: `{key}` {message}")]
    Invalid { key: String, message: String },
}

/// A config library message with every value removed: a type error on a secret
/// (`invalid type: string "…"`) would otherwise print the secret, and a TOML syntax error
/// quotes the offending source line — whatever the secret's quoting (API.md §6.25).
fn without_values(message: String) -> String {
    let kept: Vec<&str> = message.lines().filter(|l| !is_source_snippet(l)).collect();
    let message = kept.join(" ");
    let mut out = String::with_capacity(message.len());
    let chars: Vec<char> = message.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let opens_single =
            c == '\'' && (i == 0 || !chars[i - 1].is_alphanumeric()) && chars.len() > i + 1;
        if c == '"' || opens_single {
            match chars[i + 1..].iter().position(|&d| d == c) {
                Some(len) => {
                    out.push(c);
                    out.push('…');
                    out.push(c);
                    i += len + 2;
                    continue;
                }
                None => {
                    // An unterminated quote: everything after it may be the value.
                    out.push(c);
                    out.push('…');
                    break;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// A line of a TOML error's source excerpt: `  |`, `2 | token = '…`, `  |   ^`.
fn is_source_snippet(line: &str) -> bool {
    match line.split_once('|') {
        Some((gutter, _)) => gutter.trim().chars().all(|c| c.is_ascii_digit()),
        None => false,
    }
}

fn redact<S: Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    if s.expose_secret().is_empty() {
        ser.serialize_str("")
    } else {
        ser.serialize_str("<redacted>")
    }
}

fn redact_list<S: Serializer>(v: &[SecretString], ser: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = ser.serialize_seq(Some(v.len()))?;
    for _ in v {
        seq.serialize_element("<redacted>")?;
    }
    seq.end()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub crypto: CryptoSettings,
    pub admin: AdminSettings,
    pub registration: RegistrationSettings,
    pub otp: OtpSettings,
    pub hashing: HashingSettings,
    pub limits: LimitSettings,
    pub smtp: SmtpSettings,
    pub webhooks: WebhookSettings,
    pub compat: CompatSettings,
    pub audit: AuditSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
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
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_size: u32,
    /// PEM file of CA certificates trusted (besides the system roots) for PostgreSQL with
    /// `sslmode=verify-full`; empty for none.
    pub tls_ca_file: String,
    /// PostgreSQL: how long to wait to connect or for a pooled connection.
    pub timeout_seconds: u64,
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    #[serde(serialize_with = "redact")]
    pub token: SecretString,
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
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HashingSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub max_concurrent: usize,
    pub max_queue: usize,
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
    pub max_connections_limit: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub allow_private_hosts: bool,
    pub allow_plaintext: bool,
    pub timeout_seconds: u64,
    pub extra_root_certificates: Vec<PathBuf>,
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    #[serde(serialize_with = "redact")]
    pub token: SecretString,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
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

impl Settings {
    /// Load the layers: embedded defaults, then `file` (if any), then `OTPMINT__*` variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            let name = path.display().to_string();
            if !path.is_file() {
                return Err(ConfigError::Load {
                    source_name: name,
                    message: "file not found".into(),
                });
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
            // Deserialize this layer alone first, so an error names the file.
            let cfg = builder.build_cloned().map_err(|e| ConfigError::Load {
                source_name: name.clone(),
                message: without_values(e.to_string()),
            })?;
            cfg.try_deserialize::<Settings>()
                .map_err(|e| ConfigError::Load {
                    source_name: name.clone(),
                    message: without_values(e.to_string()),
                })?;
        }
        let mut env_names = Vec::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            // Values go in as strings (a secret "0123" stays "0123"); serde converts
            // numbers and booleans, and lists are split here.
            let result = if LIST_KEYS.contains(&key.as_str()) {
                let items: Vec<String> = value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                builder.set_override(key.as_str(), items)
            } else {
                builder.set_override(key.as_str(), value)
            };
            builder = result.map_err(|e| ConfigError::Load {
                source_name: format!("environment variable {name}"),
                message: without_values(e.to_string()),
            })?;
            env_names.push(name);
        }
        let settings: Settings =
            builder
                .build()
                .and_then(|c| c.try_deserialize())
                .map_err(|e| ConfigError::Load {
                    source_name: if env_names.is_empty() {
                        "built-in defaults".into()
                    } else {
                        format!("environment ({})", env_names.join(", "))
                    },
                    message: without_values(e.to_string()),
                })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Range and consistency checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key: key.into(),
                message: message.into(),
            }
        }
        fn range(key: &str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
            if v < lo || v > hi {
                return Err(invalid(
                    key,
                    format!("must be between {lo} and {hi} (got {v})"),
                ));
            }
            Ok(())
        }
        self.server
            .bind
            .parse::<SocketAddr>()
            .map_err(|_| invalid("server.bind", "must be an address:port like 127.0.0.1:8080"))?;
        for p in &self.server.trusted_proxies {
            parse_net(p).ok_or_else(|| {
                invalid(
                    "server.trusted_proxies",
                    format!("`{p}` is not an IP address or CIDR range"),
                )
            })?;
        }
        self.database_location()?;
        range("database.pool_size", self.database.pool_size.into(), 1, 256)?;
        range(
            "database.timeout_seconds",
            self.database.timeout_seconds,
            1,
            300,
        )?;
        // The policy ranges a tenant's own policy is held to (one source: domain/policy.rs).
        use crate::domain::policy::{CODE_LENGTH, MAX_ATTEMPTS, TTL_SECONDS};
        for (key, v, (lo, hi)) in [
            ("otp.code_length", self.otp.code_length, CODE_LENGTH),
            ("otp.ttl_seconds", self.otp.ttl_seconds, TTL_SECONDS),
            ("otp.max_attempts", self.otp.max_attempts, MAX_ATTEMPTS),
        ] {
            range(key, v.into(), lo.into(), hi.into())?;
        }
        range(
            "otp.retention_seconds",
            self.otp.retention_seconds,
            0,
            365 * 86_400,
        )?;
        range(
            "hashing.memory_kib",
            self.hashing.memory_kib.into(),
            8,
            4 * 1024 * 1024,
        )?;
        range("hashing.iterations", self.hashing.iterations.into(), 1, 64)?;
        range(
            "hashing.parallelism",
            self.hashing.parallelism.into(),
            1,
            64,
        )?;
        if u64::from(self.hashing.memory_kib) < 8 * u64::from(self.hashing.parallelism) {
            return Err(invalid(
                "hashing.memory_kib",
                "must be at least 8 x hashing.parallelism",
            ));
        }
        range(
            "hashing.max_concurrent",
            self.hashing.max_concurrent as u64,
            0,
            1024,
        )?;
        range("smtp.timeout_seconds", self.smtp.timeout_seconds, 1, 600)?;
        range("smtp.pool_size", self.smtp.pool_size as u64, 0, 64)?;
        range(
            "webhooks.timeout_seconds",
            self.webhooks.timeout_seconds,
            1,
            60,
        )?;
        range(
            "smtp.max_connections_limit",
            self.smtp.max_connections_limit.into(),
            1,
            4096,
        )?;
        range(
            "smtp.max_connections_per_tenant",
            self.smtp.max_connections_per_tenant.into(),
            1,
            self.smtp.max_connections_limit.into(),
        )?;
        range(
            "server.request_timeout_seconds",
            self.server.request_timeout_seconds,
            1,
            3600,
        )?;
        range(
            "server.max_connections_per_worker",
            self.server.max_connections_per_worker as u64,
            1,
            1_000_000,
        )?;
        if self.smtp.allowed_ports.contains(&0) {
            return Err(invalid("smtp.allowed_ports", "port 0 is not a port"));
        }
        range(
            "compat.max_attempts",
            self.compat.max_attempts.into(),
            crate::domain::policy::MAX_ATTEMPTS.0.into(),
            crate::domain::policy::MAX_ATTEMPTS.1.into(),
        )?;
        parse_level(&self.log.level)
            .ok_or_else(|| invalid("log.level", "must be error, warn, info, debug or trace"))?;
        let key_set = !self.crypto.master_key.expose_secret().is_empty();
        if key_set && self.crypto.master_key_file != DEFAULT_KEY_FILE {
            return Err(invalid(
                "crypto.master_key",
                "set either crypto.master_key or crypto.master_key_file, not both",
            ));
        }
        if key_set {
            crate::crypto::keyring::MasterKey::from_base64(self.crypto.master_key.expose_secret())
                .map_err(|e| invalid("crypto.master_key", e.to_string()))?;
        }
        for k in &self.crypto.previous_master_keys {
            crate::crypto::keyring::MasterKey::from_base64(k.expose_secret())
                .map_err(|e| invalid("crypto.previous_master_keys", e.to_string()))?;
        }
        Ok(())
    }

    /// `database.url` parsed: `sqlite://rel/path.db`, `sqlite:///abs/path.db`, or
    /// `postgres://…` / `postgresql://…` (checked further when connecting).
    pub fn database_location(&self) -> Result<DatabaseLocation, ConfigError> {
        let url = self.database.url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseLocation::Postgres(url.to_string()));
        }
        let Some(rest) = url.strip_prefix("sqlite://") else {
            return Err(ConfigError::Invalid {
                key: "database.url".into(),
                message: "must start with sqlite://, postgres:// or postgresql://".into(),
            });
        };
        if rest.is_empty() || rest == "/" {
            return Err(ConfigError::Invalid {
                key: "database.url".into(),
                message: "names no file".into(),
            });
        }
        Ok(DatabaseLocation::Sqlite(PathBuf::from(rest)))
    }

    pub fn max_hashing_threads(&self) -> usize {
        if self.hashing.max_concurrent == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.hashing.max_concurrent
        }
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn redacted_toml(&self) -> String {
        toml_like(&serde_json::to_value(self).unwrap_or_default())
    }
}

fn toml_like(v: &serde_json::Value) -> String {
    let mut out = String::new();
    if let serde_json::Value::Object(sections) = v {
        for (name, section) in sections {
            out.push_str(&format!("[{name}]\n"));
            if let serde_json::Value::Object(keys) = section {
                for (k, val) in keys {
                    out.push_str(&format!("{k} = {val}\n"));
                }
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_validate() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:8080");
        assert_eq!(s.otp.code_length, 6);
        assert_eq!(s.registration.mode, RegistrationMode::Admin);
        assert_eq!(s.smtp.allowed_ports, vec![465, 587, 2525]);
    }

    #[test]
    fn env_overrides_keep_secrets_as_strings_and_split_lists() {
        let s = Settings::load_from(
            None,
            env(&[
                ("OTPMINT__ADMIN__TOKEN", "0123"),
                ("OTPMINT__SMTP__ALLOWED_PORTS", "587, 2525"),
                ("OTPMINT__OTP__TTL_SECONDS", "60"),
                ("OTPMINT__SMTP__ALLOW_PLAINTEXT", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(s.admin.token.expose_secret(), "0123");
        assert_eq!(s.smtp.allowed_ports, vec![587, 2525]);
        assert_eq!(s.otp.ttl_seconds, 60);
        assert!(s.smtp.allow_plaintext);
    }

    #[test]
    fn unknown_env_key_is_named() {
        let err = Settings::load_from(None, env(&[("OTPMINT__SERVER__BND", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bnd"), "{err}");
        assert!(err.contains("OTPMINT__SERVER__BND"), "{err}");
    }

    #[test]
    fn unknown_file_key_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[otp]\nttl = 5\n").unwrap();
        let err = Settings::load_from(Some(&p), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ttl"), "{err}");
        assert!(err.contains("c.toml"), "{err}");
    }

    #[test]
    fn out_of_range_is_refused_with_key() {
        let err = Settings::load_from(None, env(&[("OTPMINT__OTP__CODE_LENGTH", "12")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("otp.code_length"), "{err}");
    }

    #[test]
    fn both_master_key_and_file_is_an_error() {
        let err = Settings::load_from(
            None,
            env(&[
                (
                    "OTPMINT__CRYPTO__MASTER_KEY",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                ),
                ("OTPMINT__CRYPTO__MASTER_KEY_FILE", "/tmp/x.key"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("crypto.master_key"), "{err}");
    }

    #[test]
    fn a_type_error_on_a_secret_does_not_print_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[crypto]\nprevious_master_keys = \"c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw==\"\n",
        )
        .unwrap();
        let err = Settings::load_from(Some(&p), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("c2VjcmV0"), "{err}");
        assert!(
            err.contains("previous_master_keys") || err.contains("sequence"),
            "{err}"
        );
    }

    #[test]
    fn a_syntax_error_in_a_single_quoted_secret_does_not_print_it() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "[admin]\ntoken = 'sekrit-token-value-123\n",
            "[admin]\ntoken = \"sekrit-token-value-123\n",
            "[admin]\ntoken = 'sekrit-token-value-123' x\n",
            "[admin]\ntoken = '''sekrit-token-value-123\n",
        ] {
            let p = dir.path().join("c.toml");
            std::fs::write(&p, text).unwrap();
            let err = Settings::load_from(Some(&p), env(&[]))
                .unwrap_err()
                .to_string();
            assert!(!err.contains("sekrit"), "{err}");
            assert!(err.contains("c.toml"), "{err}");
        }
    }

    #[test]
    fn database_url_forms() {
        let mut s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(
            s.database_location().unwrap(),
            DatabaseLocation::Sqlite(PathBuf::from("data/otpmint.db"))
        );
        s.database.url = "sqlite:///var/lib/o.db".into();
        assert_eq!(
            s.database_location().unwrap(),
            DatabaseLocation::Sqlite(PathBuf::from("/var/lib/o.db"))
        );
        s.database.url = "mysql://x".into();
        assert!(s.database_location().is_err());
    }
}

#[cfg(test)]
mod docs_tests {
    /// Every key of the embedded defaults appears in docs/configuration.md with its env name.
    #[test]
    fn docs_list_every_key() {
        let docs = include_str!("../docs/configuration.md");
        let mut section = String::new();
        let mut keys = 0;
        for line in super::DEFAULT_TOML.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line
                    .trim_matches(['[', ']'])
                    .split(']')
                    .next()
                    .unwrap_or("")
                    .to_string();
            } else if let Some((key, _)) = line.split_once('=') {
                if line.starts_with('#') {
                    continue;
                }
                let key = key.trim();
                let full = format!("`{section}.{key}`");
                let env = format!(
                    "`OTPMINT__{}__{}`",
                    section.to_uppercase(),
                    key.to_uppercase()
                );
                assert!(docs.contains(&full), "docs/configuration.md lacks {full}");
                assert!(docs.contains(&env), "docs/configuration.md lacks {env}");
                assert!(
                    super::DEFAULT_TOML.contains(&env[1..env.len() - 1]),
                    "config/default.toml does not name {env}"
                );
                keys += 1;
            }
        }
        assert!(keys > 30, "parsed only {keys} keys");
    }
}
