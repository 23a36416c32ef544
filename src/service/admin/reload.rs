//! SIGHUP: the settings that take effect at once, and which changed keys need a restart.

use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::config::Settings;
use crate::service::Admin;

/// The settings that take effect without a restart, each named once: [`LIVE_KEYS`] lists them
/// as `section.key`, and `with_live` copies them. Everything else is reported as needing one.
macro_rules! live_settings {
    ($($section:ident . $key:ident),* $(,)?) => {
        /// Settings that take effect without a restart.
        const LIVE_KEYS: &[&str] = &[$(concat!(stringify!($section), ".", stringify!($key))),*];

        /// The settings in force after a reload: the old ones, with the keys of [`LIVE_KEYS`]
        /// taken from the new file. A key that needs a restart keeps its old value until the
        /// restart, so nothing reads a value the running parts were not built with (a lease
        /// sized from a new `smtp.timeout_seconds` while the mailer keeps the old one).
        fn with_live(old: &Settings, new: &Settings) -> Settings {
            let mut s = old.clone();
            $(s.$section.$key.clone_from(&new.$section.$key);)*
            s
        }
    };
}

live_settings! {
    admin.token,
    // Where the token is read from: the token it names is read again and applied with it.
    admin.token_file,
    registration.mode,
    otp.code_length,
    otp.ttl_seconds,
    otp.max_attempts,
    otp.retention_seconds,
    limits.recipient_max_sends,
    limits.recipient_window_seconds,
    limits.resend_cooldown_seconds,
    limits.tenant_max_sends_per_hour,
    limits.recipient_max_failures,
    compat.max_attempts,
    audit.retention_seconds,
    metrics.token,
    metrics.token_file,
    webhooks.allow_private_hosts,
    webhooks.allow_plaintext,
    webhooks.timeout_seconds,
    webhooks.max_in_flight_per_tenant,
    smtp.initial_connections,
    templates.max_locales_per_tenant,
    log.level,
}

/// Every `section.key` whose value differs between two settings (secrets compared by value,
/// never printed).
fn changed_keys(old: &Settings, new: &Settings) -> Vec<String> {
    fn flat(s: &Settings) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let exposed = |v: &secrecy::SecretString| v.expose_secret().to_string();
        let mut secrets = vec![
            (
                "crypto.master_key".to_string(),
                exposed(&s.crypto.master_key),
            ),
            ("admin.token".to_string(), exposed(&s.admin.token)),
            ("metrics.token".to_string(), exposed(&s.metrics.token)),
            (
                "crypto.previous_master_keys".to_string(),
                s.crypto
                    .previous_master_keys
                    .iter()
                    .map(exposed)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ];
        if let Ok(serde_json::Value::Object(sections)) = serde_json::to_value(s) {
            for (sec, v) in sections {
                if let serde_json::Value::Object(keys) = v {
                    for (k, val) in keys {
                        out.push((format!("{sec}.{k}"), val.to_string()));
                    }
                }
            }
        }
        out.retain(|(k, _)| !secrets.iter().any(|(sk, _)| sk == k));
        out.append(&mut secrets);
        out
    }
    let old = flat(old);
    let new = flat(new);
    let mut changed: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.iter().find(|(ok, _)| ok == k).map(|(_, ov)| ov) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    changed.sort();
    changed
}

impl Admin {
    /// Apply new settings: the live ones take effect now, the others at the next start;
    /// returns (applied, need a restart).
    pub fn reload(&self, new: Settings) -> (Vec<String>, Vec<String>) {
        let old = self.core.settings.load_full();
        let changed = changed_keys(&old, &new);
        let (live, restart): (Vec<String>, Vec<String>) = changed
            .into_iter()
            .partition(|k| LIVE_KEYS.contains(&k.as_str()));
        self.core.settings.store(Arc::new(with_live(&old, &new)));
        (live, restart)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_reload_applies_the_live_keys_and_keeps_the_others_until_a_restart() {
        let old = Settings::load_from(None, Vec::<(String, String)>::new()).unwrap();
        let mut new = old.clone();
        // Every key changed at once: the live ones must all be taken, no other.
        new.smtp.timeout_seconds += 1;
        new.smtp.pool_size += 1;
        new.server.workers += 1;
        new.database.pool_size += 1;
        new.admin.token = secrecy::SecretString::from("another-admin-token".to_string());
        new.registration.mode = crate::config::RegistrationMode::Closed;
        new.otp.code_length += 1;
        new.otp.ttl_seconds += 1;
        new.otp.max_attempts += 1;
        new.otp.retention_seconds += 1;
        new.limits.recipient_max_sends += 1;
        new.limits.recipient_window_seconds += 1;
        new.limits.resend_cooldown_seconds += 1;
        new.limits.tenant_max_sends_per_hour += 1;
        new.limits.recipient_max_failures += 1;
        new.compat.max_attempts += 1;
        new.audit.retention_seconds += 1;
        new.metrics.token = secrecy::SecretString::from("metrics-token".to_string());
        new.admin.token_file = "/run/secrets/admin-token".into();
        new.metrics.token_file = "/run/secrets/metrics-token".into();
        new.webhooks.allow_private_hosts = !new.webhooks.allow_private_hosts;
        new.webhooks.allow_plaintext = !new.webhooks.allow_plaintext;
        new.webhooks.timeout_seconds += 1;
        new.webhooks.max_in_flight_per_tenant += 1;
        new.smtp.initial_connections += 1;
        new.templates.max_locales_per_tenant += 1;
        new.log.level = "debug".into();
        let merged = with_live(&old, &new);
        let taken = changed_keys(&old, &merged);
        let mut live: Vec<String> = LIVE_KEYS.iter().map(|k| k.to_string()).collect();
        live.sort();
        assert_eq!(taken, live, "exactly the live keys are applied");
        assert_eq!(
            changed_keys(&merged, &new),
            [
                "database.pool_size",
                "server.workers",
                "smtp.pool_size",
                "smtp.timeout_seconds"
            ],
            "the others wait for a restart"
        );
        assert_eq!(merged.smtp.timeout_seconds, old.smtp.timeout_seconds);
    }
}
