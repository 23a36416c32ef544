//! Range and consistency checks of the loaded settings that serde cannot express.

use super::*;

impl Settings {
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
        if !self.dns.resolver.is_empty() && self.dns.resolver.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "dns.resolver",
                "must be empty (the system resolver) or IP:PORT like 127.0.0.1:53",
            ));
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
        // Every number is bounded (API.md §6.31): windows, cooldowns and retentions feed time
        // arithmetic in milliseconds, which a value near the type's maximum would overflow.
        const DAY: u64 = 86_400;
        let l = &self.limits;
        for (key, v, hi) in [
            (
                "limits.per_ip_per_second",
                u64::from(l.per_ip_per_second),
                1_000_000,
            ),
            ("limits.per_ip_burst", u64::from(l.per_ip_burst), 10_000_000),
            (
                "limits.recipient_max_sends",
                u64::from(l.recipient_max_sends),
                1_000_000,
            ),
            (
                "limits.recipient_window_seconds",
                l.recipient_window_seconds,
                30 * DAY,
            ),
            (
                "limits.resend_cooldown_seconds",
                l.resend_cooldown_seconds,
                DAY,
            ),
            (
                "limits.tenant_max_sends_per_hour",
                u64::from(l.tenant_max_sends_per_hour),
                100_000_000,
            ),
            (
                "limits.recipient_max_failures",
                u64::from(l.recipient_max_failures),
                1_000_000,
            ),
            (
                "limits.test_sends_per_hour",
                u64::from(l.test_sends_per_hour),
                100_000_000,
            ),
            (
                "limits.test_code_max_failures",
                u64::from(l.test_code_max_failures),
                1_000_000,
            ),
            (
                "limits.sms_range_per_hour",
                u64::from(l.sms_range_per_hour),
                100_000_000,
            ),
            (
                "limits.sms_unverified_per_country_per_hour",
                u64::from(l.sms_unverified_per_country_per_hour),
                100_000_000,
            ),
        ] {
            range(key, v, 0, hi)?;
        }
        if l.per_ip_per_second > 0 && l.per_ip_burst == 0 {
            return Err(invalid(
                "limits.per_ip_burst",
                "must be at least 1 while limits.per_ip_per_second is on",
            ));
        }
        range("server.workers", self.server.workers as u64, 0, 1024)?;
        range(
            "server.shutdown_grace_seconds",
            self.server.shutdown_grace_seconds,
            0,
            3600,
        )?;
        range(
            "hashing.max_queue",
            self.hashing.max_queue as u64,
            0,
            1_000_000,
        )?;
        range(
            "audit.retention_seconds",
            self.audit.retention_seconds,
            0,
            3650 * DAY,
        )?;
        range("otp.max_resends", self.otp.max_resends.into(), 0, 10)?;
        range(
            "delivery.breaker_failures",
            self.delivery.breaker_failures.into(),
            1,
            1000,
        )?;
        range(
            "delivery.breaker_seconds",
            self.delivery.breaker_seconds,
            1,
            3600,
        )?;
        range(
            "delivery.http_timeout_seconds",
            self.delivery.http_timeout_seconds,
            1,
            300,
        )?;
        range(
            "delivery.max_sessions",
            self.delivery.max_sessions.into(),
            1,
            100_000,
        )?;
        for (kind, url) in &self.delivery.provider_base_urls {
            let key = format!("delivery.provider_base_urls.{kind}");
            if crate::domain::provider::ProviderKind::parse(kind).is_none() {
                return Err(invalid(
                    &key,
                    format!(
                        "is not a provider kind (one of {})",
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
                    && u.username().is_empty()
            });
            if !ok {
                return Err(invalid(
                    &key,
                    "must be a base URL: scheme, host and port only, like https://host:8443",
                ));
            }
        }
        range(
            "stats.retention_days",
            self.stats.retention_days.into(),
            1,
            3650,
        )?;
        range(
            "templates.max_locales_per_tenant",
            self.templates.max_locales_per_tenant.into(),
            1,
            1000,
        )?;
        range(
            "webhooks.max_in_flight_per_tenant",
            self.webhooks.max_in_flight_per_tenant.into(),
            1,
            256,
        )?;
        range(
            "webhooks.max_in_flight",
            self.webhooks.max_in_flight.into(),
            1,
            4096,
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
            "smtp.initial_connections",
            self.smtp.initial_connections.into(),
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
}
