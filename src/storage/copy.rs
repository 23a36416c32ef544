//! `otpmint migrate-store`: what an installation is, table by table, in a form both
//! backends read and write. Rows are copied as stored (keys stay wrapped, passwords and
//! messages stay sealed), so the copy opens with the same master key.

use super::engine::Dialect;
use super::StoreError;

/// The kind of a column, for the backends' types (SQLite keeps flags as integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    /// A count kept as a 32-bit integer on PostgreSQL (`INTEGER`; SQLite's are all 64-bit).
    Count,
    Text,
    Blob,
    Bool,
}

/// One value of a copied row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
    Bool(bool),
}

/// A table and the columns copied, in an order that respects the foreign keys.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Kind)],
    /// Columns whose values the target numbers itself (copied rows keep theirs; PostgreSQL's
    /// sequences are moved past them).
    pub identity: Option<&'static str>,
}

use Kind::{Blob, Bool, Count, Int, Text};

pub const TABLES: &[Table] = &[
    Table {
        name: "keyring",
        columns: &[
            ("kind", Text),
            ("version", Int),
            ("wrapped", Blob),
            ("kek_id", Text),
            ("active", Bool),
            ("created_at", Int),
        ],
        identity: None,
    },
    Table {
        name: "tenants",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("enabled", Bool),
            ("origin", Text),
            ("created_at", Int),
            ("updated_at", Int),
            ("smtp_host", Text),
            ("smtp_port", Int),
            ("smtp_username", Text),
            ("smtp_password", Blob),
            ("smtp_from", Text),
            ("smtp_tls", Text),
            ("smtp_version", Int),
            ("code_length", Int),
            ("ttl_seconds", Int),
            ("max_attempts", Int),
            ("smtp_max_connections", Int),
            ("delivery", Text),
            ("default_locale", Text),
            ("templates_version", Int),
            ("row_version", Int),
            ("test", Bool),
            ("test_version", Int),
            ("fallback_host", Text),
            ("fallback_port", Int),
            ("fallback_username", Text),
            ("fallback_password", Blob),
            ("fallback_from", Text),
            ("fallback_tls", Text),
            ("fallback_max_connections", Int),
            ("http_url", Text),
            ("http_use", Text),
            ("http_secret", Blob),
            ("allowed_return_urls", Text),
            ("brand_color", Text),
            ("smtp_oauth2", Text),
            ("fallback_oauth2", Text),
            ("email_provider", Text),
            ("email_provider_secrets", Blob),
            ("sms_provider", Text),
            ("sms_provider_secrets", Blob),
            ("suppression_off", Bool),
            ("suppressed", Int),
            ("pages_approved", Bool),
            ("sms_allowed_countries", Text),
            ("sms_trusted_days", Int),
            ("sms_allow_fixed_line", Bool),
            ("dkim_keys", Text),
            ("dkim_private", Blob),
        ],
        identity: None,
    },
    Table {
        name: "tenant_logos",
        columns: &[("tenant_id", Text), ("png", Blob), ("updated_at", Int)],
        identity: None,
    },
    Table {
        name: "hosted_sessions",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("email", Text),
            ("purpose", Text),
            ("locale", Text),
            ("return_url", Text),
            ("key_digest", Blob),
            ("key_sealed", Blob),
            ("status", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("verified_at", Int),
            ("code_challenge", Text),
            ("claimed_at", Int),
            ("finished_by", Blob),
        ],
        identity: None,
    },
    Table {
        name: "templates",
        columns: &[
            ("tenant_id", Text),
            ("locale", Text),
            ("subject", Text),
            ("text", Text),
            ("html", Text),
            ("updated_at", Int),
            ("sms", Text),
        ],
        identity: None,
    },
    Table {
        name: "tenant_secrets",
        columns: &[
            ("digest", Blob),
            ("tenant_id", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("test", Bool),
        ],
        identity: None,
    },
    Table {
        name: "challenges",
        columns: &[
            ("key_digest", Blob),
            ("tenant_id", Text),
            ("flavor", Text),
            ("email", Text),
            ("email_canonical", Text),
            ("purpose", Text),
            ("seq", Int),
            ("code_hash", Text),
            ("status", Text),
            ("attempts", Int),
            ("max_attempts", Int),
            ("code_length", Int),
            ("created_at", Int),
            ("expires_at", Int),
            ("verified_at", Int),
            ("ended_at", Int),
            ("delivery_mode", Text),
            ("delivery_status", Text),
            ("delivery_attempts", Int),
            ("delivery_reason", Text),
            ("sent_at", Int),
            ("locale", Text),
            ("resends", Int),
            ("earlier_hashes", Text),
            ("test", Bool),
            ("channel", Text),
            ("stats_state", Int),
            ("delivery_transport", Text),
            ("verified_via", Text),
            ("provider_message_id", Text),
            ("delivery_detail_code", Text),
            ("code_challenge", Text),
            ("claimed_at", Int),
            ("attempt_at", Int),
            ("attempt_by", Text),
            ("attempts_open", Int),
        ],
        identity: None,
    },
    Table {
        name: "magic_links",
        columns: &[
            ("digest", Blob),
            ("key_digest", Blob),
            ("return_url", Text),
            ("key_sealed", Blob),
            ("created_at", Int),
            ("finished_by", Blob),
        ],
        identity: None,
    },
    Table {
        name: "outbox",
        columns: &[
            ("key_digest", Blob),
            ("tenant_id", Text),
            ("recipient", Text),
            ("payload", Blob),
            ("due_at", Int),
            ("attempts", Int),
            ("lease_until", Int),
            ("leased_by", Text),
            ("maybe_delivered", Bool),
            ("quota_at", Int),
            ("created_at", Int),
            ("channel", Text),
            ("unstarted", Bool),
        ],
        identity: None,
    },
    Table {
        name: "sends",
        columns: &[
            ("id", Int),
            ("tenant_id", Text),
            ("email_canonical", Text),
            ("at", Int),
        ],
        identity: Some("id"),
    },
    Table {
        name: "tenant_send_minutes",
        columns: &[("tenant_id", Text), ("minute", Int), ("sends", Int)],
        identity: None,
    },
    Table {
        name: "recipient_failures",
        columns: &[
            ("tenant_id", Text),
            ("email_canonical", Text),
            ("failures", Int),
            ("window_start", Int),
        ],
        identity: None,
    },
    Table {
        name: "idempotency_keys",
        columns: &[
            ("tenant_id", Text),
            ("key_digest", Blob),
            ("fingerprint", Blob),
            ("status", Int),
            ("response", Blob),
            ("lease_until", Int),
            ("expires_at", Int),
            ("holder", Text),
            ("staged", Blob),
            ("staged_code", Blob),
        ],
        identity: None,
    },
    Table {
        name: "webhooks",
        columns: &[
            ("tenant_id", Text),
            ("url", Text),
            ("events", Text),
            ("secret", Blob),
            ("created_at", Int),
            ("updated_at", Int),
            ("disabled_at", Int),
            ("disabled_reason", Text),
        ],
        identity: None,
    },
    Table {
        name: "webhook_events",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("type", Text),
            ("payload", Blob),
            ("created_at", Int),
            ("due_at", Int),
            ("attempts", Int),
            ("lease_until", Int),
            ("leased_by", Text),
            ("status", Text),
        ],
        identity: None,
    },
    Table {
        name: "webhook_deliveries",
        columns: &[
            ("id", Int),
            ("tenant_id", Text),
            ("event_id", Text),
            ("type", Text),
            ("attempt", Int),
            ("status_code", Int),
            ("error", Text),
            ("at", Int),
        ],
        identity: Some("id"),
    },
    Table {
        name: "audit",
        columns: &[
            ("id", Int),
            ("tenant_id", Text),
            ("at", Int),
            ("event", Text),
            ("recipient", Text),
            ("outcome", Text),
            ("client_ip", Text),
            ("request_id", Text),
        ],
        identity: Some("id"),
    },
    Table {
        name: "suppressions",
        columns: &[
            ("tenant_id", Text),
            ("recipient", Text),
            ("reason", Text),
            ("source", Text),
            ("created_at", Int),
        ],
        identity: None,
    },
    Table {
        name: "sms_sends",
        columns: &[
            ("tenant_id", Text),
            ("key_digest", Blob),
            ("range_prefix", Text),
            ("country", Text),
            ("at", Int),
            ("verified", Bool),
        ],
        identity: None,
    },
    Table {
        name: "provider_events",
        columns: &[
            ("tenant_id", Text),
            ("provider", Text),
            ("event_id", Text),
            ("received_at", Int),
        ],
        identity: None,
    },
    Table {
        name: "sms_trusted",
        columns: &[("tenant_id", Text), ("phone", Text), ("verified_at", Int)],
        identity: None,
    },
    Table {
        name: "test_recipients",
        columns: &[
            ("tenant_id", Text),
            ("pattern", Text),
            ("code_hash", Text),
            ("code_length", Int),
            ("expires_at", Int),
            ("created_at", Int),
            ("failures", Count),
            ("disabled_at", Int),
        ],
        identity: None,
    },
    Table {
        name: "test_inbox",
        columns: &[
            ("id", Int),
            ("tenant_id", Text),
            ("key_digest", Blob),
            ("recipient", Text),
            ("message", Blob),
            ("received_at", Int),
        ],
        identity: Some("id"),
    },
    Table {
        name: "test_send_minutes",
        columns: &[("tenant_id", Text), ("minute", Int), ("sends", Int)],
        identity: None,
    },
    Table {
        name: "legacy_imports",
        columns: &[("kind", Text), ("digest", Blob), ("imported_at", Int)],
        identity: None,
    },
    Table {
        name: "stats",
        columns: &[
            ("tenant_id", Text),
            ("dim", Text),
            ("value", Text),
            ("hour", Int),
            ("shard", Int),
            ("minted", Count),
            ("sent", Count),
            ("failed", Count),
            ("verified", Count),
            ("expired_unverified", Count),
            ("test", Count),
            ("v0", Count),
            ("v1", Count),
            ("v2", Count),
            ("v3", Count),
            ("v4", Count),
            ("v5", Count),
            ("v6", Count),
            ("v7", Count),
            ("v8", Count),
            ("v9", Count),
            ("v10", Count),
            ("v11", Count),
            ("v12", Count),
            ("v13", Count),
            ("v14", Count),
            ("blocked_country", Count),
            ("blocked_number", Count),
            ("blocked_velocity", Count),
            ("bounced", Count),
            ("complained", Count),
        ],
        identity: None,
    },
];

impl Table {
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The statement that inserts one copied row into SQLite (PostgreSQL takes a part in
    /// one `COPY`).
    pub(crate) fn insert_sql(&self) -> String {
        let marks = (1..=self.columns.len())
            .map(|i| Dialect::Sqlite.placeholder(i))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} ({}) VALUES ({marks})",
            self.name,
            self.column_list()
        )
    }
}

/// Why an import into a database that holds `tenants` or a `keyring` already is refused
/// (API.md §7.6): its data would mix with the copy's, and a keyring is in use by every
/// instance that has started on it — their data keys are not the copy's.
pub(crate) fn held(tenants: bool, keyring: bool) -> Result<(), StoreError> {
    match (tenants, keyring) {
        (true, _) => Err(StoreError::Conflict(
            "the target database already holds tenants: copy into a new, empty database",
        )),
        (false, true) => Err(StoreError::Conflict(
            "the target database already holds a keyring (`otpmint migrate` or an instance \
             that started on it made one): copy into a new, empty database (migrate-store \
             makes its schema itself)",
        )),
        (false, false) => Ok(()),
    }
}

#[path = "copy_parts.rs"]
mod parts;
pub use parts::{row_size, Parts, Sink, Source, PART_BYTES, PART_ROWS};

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
