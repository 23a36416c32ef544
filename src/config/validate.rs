//! Range and consistency checks of the loaded settings that serde cannot express.

use super::*;

impl Settings {
    /// The range of the number `key` in words ("a whole number between 1 and 86400"); a key
    /// bounded by another setting names that setting (its value may not have loaded).
    pub(super) fn range_of(key: &str) -> Option<String> {
        /// The keys bounded by `smtp.max_connections_limit`, whose own bounds are its.
        const BOUNDED_BY_ANOTHER: [&str; 2] = [
            "smtp.max_connections_per_tenant",
            "smtp.initial_connections",
        ];
        static DEFAULTS: std::sync::LazyLock<Option<Settings>> = std::sync::LazyLock::new(|| {
            config::Config::builder()
                .add_source(config::File::from_str(
                    DEFAULT_TOML,
                    config::FileFormat::Toml,
                ))
                .build()
                .ok()?
                .try_deserialize()
                .ok()
        });
        if key == "smtp.allowed_ports" {
            return Some("a list of port numbers between 1 and 65535".into());
        }
        let ranges = DEFAULTS.as_ref()?.ranges();
        let of = |key: &str| ranges.iter().find(|(k, ..)| *k == key).map(|r| (r.2, r.3));
        if BOUNDED_BY_ANOTHER.contains(&key) {
            let ((lo, _), (_, most)) = (of(key)?, of("smtp.max_connections_limit")?);
            return Some(format!(
                "a whole number between {lo} and `smtp.max_connections_limit` (at most {most})"
            ));
        }
        of(key).map(|(lo, hi)| format!("a whole number between {lo} and {hi}"))
    }

    /// Every number of the settings with its range, `(key, value, lo, hi)`, in the order
    /// they are checked (API.md §6.31): windows, cooldowns and retentions feed time
    /// arithmetic in milliseconds, which a value near the type's maximum would overflow. The
    /// key is the field's own path, so the two cannot drift apart.
    pub(super) fn ranges(&self) -> Vec<(&'static str, u64, u64, u64)> {
        // The policy ranges a tenant's own policy is held to (one source: domain/policy.rs).
        use crate::domain::policy::{CODE_LENGTH, MAX_ATTEMPTS, TTL_SECONDS};
        const DAY: u64 = 86_400;
        fn wide(v: impl TryInto<u64>) -> u64 {
            v.try_into().unwrap_or(u64::MAX)
        }
        let s = self;
        let mut out = Vec::new();
        macro_rules! within {
            ($($section:ident . $key:ident: $lo:expr, $hi:expr;)*) => {
                $(out.push((
                    concat!(stringify!($section), ".", stringify!($key)),
                    wide(s.$section.$key),
                    wide($lo),
                    wide($hi),
                ));)*
            };
        }
        within! {
            database.pool_size: 1, 256;
            database.timeout_seconds: 1, 300;
            database.start_wait_seconds: 0, 3600;
            otp.code_length: CODE_LENGTH.0, CODE_LENGTH.1;
            otp.ttl_seconds: TTL_SECONDS.0, TTL_SECONDS.1;
            otp.max_attempts: MAX_ATTEMPTS.0, MAX_ATTEMPTS.1;
            otp.retention_seconds: 0, 365 * 86_400;
            hashing.memory_kib: 8, 4 * 1024 * 1024;
            hashing.iterations: 1, 64;
            hashing.parallelism: 1, 64;
            hashing.max_concurrent: 0, 1024;
            limits.per_ip_per_second: 0, 1_000_000;
            limits.per_ip_burst: 0, 10_000_000;
            limits.recipient_max_sends: 0, 1_000_000;
            limits.recipient_window_seconds: 0, 30 * DAY;
            limits.resend_cooldown_seconds: 0, DAY;
            limits.tenant_max_sends_per_hour: 0, 100_000_000;
            limits.recipient_max_failures: 0, 1_000_000;
            limits.test_sends_per_hour: 0, 100_000_000;
            limits.test_code_max_failures: 0, 1_000_000;
            limits.sms_range_per_hour: 0, 100_000_000;
            limits.sms_unverified_per_country_per_hour: 0, 100_000_000;
            server.workers: 0, 1024;
            server.shutdown_grace_seconds: 0, 3600;
            hashing.max_queue: 0, 1_000_000;
            audit.retention_seconds: 0, 3650 * DAY;
            otp.max_resends: 0, 10;
            delivery.breaker_failures: 1, 1000;
            delivery.breaker_seconds: 1, 3600;
            delivery.http_timeout_seconds: 1, 300;
            delivery.max_sessions: 1, 100_000;
            stats.retention_days: 1, 3650;
            templates.max_locales_per_tenant: 1, 1000;
            webhooks.max_in_flight_per_tenant: 1, 256;
            webhooks.max_in_flight: 1, 4096;
            smtp.timeout_seconds: 1, 600;
            smtp.pool_size: 0, 64;
            webhooks.timeout_seconds: 1, 60;
            smtp.max_connections_limit: 1, 4096;
            smtp.max_connections_per_tenant: 1, s.smtp.max_connections_limit;
            smtp.initial_connections: 1, s.smtp.max_connections_limit;
            server.request_timeout_seconds: 1, 3600;
            server.max_connections_per_worker: 1, 1_000_000;
            compat.max_attempts: MAX_ATTEMPTS.0, MAX_ATTEMPTS.1;
        }
        out
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
        // Every number within its range first (API.md §6.31), then the rest.
        for (key, v, lo, hi) in self.ranges() {
            range(key, v, lo, hi)?;
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
        if !self.dns.resolver.is_empty() && self.dns.resolver.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "dns.resolver",
                "must be empty (the system resolver) or IP:PORT like 127.0.0.1:53",
            ));
        }
        self.database_location()?;
        // A bearer token is read without the spaces around it: a token with spaces at an end
        // (or of spaces only) could never be presented, and would lock the API by accident.
        for (key, token) in [
            ("admin.token", &self.admin.token),
            ("metrics.token", &self.metrics.token),
        ] {
            let t = secrecy::ExposeSecret::expose_secret(token);
            if t.trim() != t {
                return Err(invalid(
                    key,
                    "must not begin or end with white space (a bearer token cannot carry it); leave it empty to turn it off",
                ));
            }
        }
        if u64::from(self.hashing.memory_kib) < 8 * u64::from(self.hashing.parallelism) {
            return Err(invalid(
                "hashing.memory_kib",
                "must be at least 8 x hashing.parallelism",
            ));
        }
        let l = &self.limits;
        if l.per_ip_per_second > 0 && l.per_ip_burst == 0 {
            return Err(invalid(
                "limits.per_ip_burst",
                "must be at least 1 while limits.per_ip_per_second is on",
            ));
        }
        for (kind, url) in &self.delivery.provider_base_urls {
            let key = format!("delivery.provider_base_urls.{kind}");
            // `sts`: where SES's account is asked for (docs/providers.md, SES).
            if crate::domain::provider::ProviderKind::parse(kind).is_none() && kind != "sts" {
                return Err(invalid(
                    &key,
                    format!(
                        "is not a provider kind (one of {}) or sts",
                        crate::domain::provider::ProviderKind::ALL
                            .map(|k| k.as_str())
                            .join(", ")
                    ),
                ));
            }
            let ok = reqwest::Url::parse(url).is_ok_and(|u| {
                matches!(u.scheme(), "https" | "http")
                    && u.host_str().is_some_and(|h| !h.is_empty())
                    && matches!(u.path(), "" | "/")
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
                    && u.password().is_none()
            });
            if !ok {
                return Err(invalid(
                    &key,
                    "must be a base URL: scheme, host and port only, like https://host:8443",
                ));
            }
        }
        if !self.server.public_url.is_empty()
            && crate::domain::links::public_base(&self.server.public_url).is_none()
        {
            return Err(invalid(
                "server.public_url",
                "must be empty or an https:// URL (http:// only for localhost) without query or fragment",
            ));
        }
        if self.smtp.allowed_ports.contains(&0) {
            return Err(invalid("smtp.allowed_ports", "port 0 is not a port"));
        }
        // Host names, as the certificate URL's host is compared with them (no scheme, path
        // or port).
        if self
            .delivery
            .sns_certificate_hosts
            .iter()
            .any(|h| url::Host::parse(h).is_err())
        {
            return Err(invalid(
                "delivery.sns_certificate_hosts",
                "must hold host names only (like sns.example.test or 127.0.0.1): no scheme, path or port",
            ));
        }
        parse_level(&self.log.level)
            .ok_or_else(|| invalid("log.level", "must be error, warn, info, debug or trace"))?;
        let key_set = !self.crypto.master_key.expose_secret().is_empty();
        // An empty file setting is no file (the way to leave out the container image's).
        let file = self.crypto.master_key_file.as_str();
        if key_set && !file.is_empty() && file != DEFAULT_KEY_FILE {
            return Err(ConfigError::Conflict {
                key: "crypto.master_key".into(),
                other: "crypto.master_key_file".into(),
                hint: format!(" (the key file: {file}; an empty crypto.master_key_file, OTPMINT__CRYPTO__MASTER_KEY_FILE=\"\", leaves the file out)"),
            });
        }
        if !key_set && file.is_empty() {
            return Err(invalid(
                "crypto.master_key_file",
                "is empty and crypto.master_key is not set: name the key file, or give the key",
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
}
