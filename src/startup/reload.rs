//! SIGHUP: the settings that take effect at once, and which changed keys need a restart.

use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::config::Settings;
use crate::service::Services;

/// Settings that take effect without a restart; everything else is reported as needing one.
const LIVE_KEYS: &[&str] = &[
    "admin.token",
    "registration.mode",
    "otp.code_length",
    "otp.ttl_seconds",
    "otp.max_attempts",
    "otp.retention_seconds",
    "limits.recipient_max_sends",
    "limits.recipient_window_seconds",
    "limits.resend_cooldown_seconds",
    "limits.tenant_max_sends_per_hour",
    "limits.recipient_max_failures",
    "compat.max_attempts",
    "audit.retention_seconds",
    "metrics.token",
    "webhooks.allow_private_hosts",
    "webhooks.allow_plaintext",
    "log.level",
];

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

impl Services {
    /// Apply new settings: the live ones take effect now; returns (applied, need a restart).
    pub fn reload(&self, new: Settings) -> (Vec<String>, Vec<String>) {
        let old = self.settings.load_full();
        let changed = changed_keys(&old, &new);
        let (live, restart): (Vec<String>, Vec<String>) = changed
            .into_iter()
            .partition(|k| LIVE_KEYS.contains(&k.as_str()));
        self.settings.store(Arc::new(new));
        (live, restart)
    }
}
