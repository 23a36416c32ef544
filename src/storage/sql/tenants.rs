//! The SQL both backends run for tenants, written once with `$n` placeholders.

use crate::storage::cells::{TEMPLATE_COLS, TENANT_COLS};

shared_sql!(
    pub(crate) INSERT_TENANT =
        "INSERT INTO tenants (id, name, enabled, origin, created_at, updated_at, smtp_host, \
         smtp_port, smtp_username, smtp_password, smtp_from, smtp_tls, smtp_version, \
         code_length, ttl_seconds, max_attempts, smtp_max_connections, delivery, default_locale, \
         test, smtp_oauth2) VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
         $14, $15, $16, $17, $18, $19, $20)"
);

shared_sql!(pub(crate) SET_NAME = "UPDATE tenants SET name = $2 WHERE id = $1");

shared_sql!(pub(crate) SET_ENABLED = "UPDATE tenants SET enabled = $2 WHERE id = $1");

shared_sql!(
    pub(crate) SET_BRAND_COLOR = "UPDATE tenants SET brand_color = $2 WHERE id = $1"
);

shared_sql!(
    pub(crate) SET_ALLOWED_RETURN_URLS =
        "UPDATE tenants SET allowed_return_urls = $2 WHERE id = $1"
);

shared_sql!(
    pub(crate) SET_DELIVERY = "UPDATE tenants SET delivery = $2 WHERE id = $1"
);

shared_sql!(
    pub(crate) SET_POLICY =
        "UPDATE tenants SET code_length = $2, ttl_seconds = $3, max_attempts = $4 WHERE id = $1"
);

shared_sql!(pub(crate) SET_TEST = "UPDATE tenants SET test = $2 WHERE id = $1");

shared_sql!(
    pub(crate) SET_DEFAULT_LOCALE =
        "UPDATE tenants SET default_locale = $2 WHERE id = $1"
);

shared_sql!(
    pub(crate) PUT_HTTP =
        "UPDATE tenants SET http_url = $2, http_use = $3, http_secret = COALESCE(http_secret, \
         $4), row_version = row_version + 1 WHERE id = $1 AND row_version = $5 \
         RETURNING http_secret = $4"
);

shared_sql!(
    pub(crate) CLEAR_HTTP =
        "UPDATE tenants SET http_url = NULL, http_use = NULL, http_secret = NULL, row_version = \
         row_version + 1 WHERE id = $1 AND http_url IS NOT NULL"
);

shared_sql!(
    pub(crate) SET_HTTP_SECRET =
        "UPDATE tenants SET http_secret = $2, row_version = row_version + 1 WHERE id = $1 AND \
         http_url IS NOT NULL"
);

shared_sql!(pub(crate) DELETE_TENANT = "DELETE FROM tenants WHERE id = $1");

shared_sql!(
    pub(crate) TEMPLATES = ["SELECT ", TEMPLATE_COLS,
        " FROM templates WHERE tenant_id = $1 ORDER BY locale"]
);

shared_sql!(
    pub(crate) TEMPLATE_LOCALES =
        "SELECT locale FROM templates WHERE tenant_id = $1 ORDER BY locale"
);

shared_sql!(
    pub(crate) TEMPLATE = ["SELECT ", TEMPLATE_COLS,
        " FROM templates WHERE tenant_id = $1 AND locale = $2"]
);

shared_sql!(
    pub(crate) TEMPLATE_COUNTS =
        "SELECT COUNT(*) FILTER (WHERE locale <> $2), COUNT(*) FILTER (WHERE locale = $2) > 0 \
         FROM templates WHERE tenant_id = $1"
);

shared_sql!(
    pub(crate) BUMP_TEMPLATES_VERSION =
        "UPDATE tenants SET templates_version = templates_version + 1 WHERE id = $1"
);

shared_sql!(
    pub(crate) PUT_TEMPLATE =
        "INSERT INTO templates (tenant_id, locale, subject, text, html, updated_at, sms) VALUES \
         ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, locale) DO UPDATE SET subject = \
         excluded.subject, text = excluded.text, html = excluded.html, updated_at = \
         excluded.updated_at, sms = excluded.sms"
);

shared_sql!(
    pub(crate) DELETE_TEMPLATE = "DELETE FROM templates WHERE tenant_id = $1 AND locale = $2"
);

shared_sql!(
    /// The relay (`$9`: its OAuth2 settings); a new relay version.
    pub(crate) SET_RELAY =
        "UPDATE tenants SET smtp_host = $2, smtp_port = $3, smtp_username = $4, smtp_password = \
         $5, smtp_from = $6, smtp_tls = $7, smtp_max_connections = $8, smtp_oauth2 = $9, \
         smtp_version = smtp_version + 1 WHERE id = $1"
);

shared_sql!(
    /// The fallback relay (all NULL: none).
    pub(crate) SET_FALLBACK =
        "UPDATE tenants SET fallback_host = $2, fallback_port = $3, fallback_username = $4, \
         fallback_password = $5, fallback_from = $6, fallback_tls = $7, fallback_max_connections \
         = $8, fallback_oauth2 = $9 WHERE id = $1"
);

shared_sql!(
    /// A new version of the tenant's transports (windows and token caches start afresh).
    pub(crate) BUMP_TRANSPORTS = "UPDATE tenants SET smtp_version = smtp_version + 1 WHERE id = $1"
);

shared_sql!(
    /// Secret keys: the tenant's others end at `$2` (or keep an earlier end), and those
    /// ended by `$2` go.
    pub(crate) END_SECRETS =
        "UPDATE tenant_secrets SET expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at < \
         $2 THEN expires_at ELSE $2 END WHERE tenant_id = $1"
);

shared_sql!(
    pub(crate) DROP_ENDED_SECRETS =
        "DELETE FROM tenant_secrets WHERE tenant_id = $1 AND expires_at <= $2"
);

shared_sql!(
    /// A test tenant made live: its test keys go (API.md §17.4).
    pub(crate) DROP_TEST_SECRETS = "DELETE FROM tenant_secrets WHERE tenant_id = $1 AND test"
);

shared_sql!(
    /// A new secret key (`$1` digest, `$2` tenant, `$3` now): a test key while its tenant is
    /// a test tenant.
    pub(crate) ADD_SECRET = ADD_SECRET_TEXT
);

shared_sql!(
    /// Whether the tenant is a test tenant (its keys start `sk_test_`).
    pub(crate) TENANT_TEST = "SELECT test FROM tenants WHERE id = $1"
);

/// [`ADD_SECRET`]'s text.
const ADD_SECRET_TEXT: &str =
    "INSERT INTO tenant_secrets (digest, tenant_id, created_at, expires_at, test) SELECT $1, $2, \
     $3, NULL, t.test FROM tenants t WHERE t.id = $2";

shared_sql!(
    /// A new tenant's first secret key, as [`ADD_SECRET`] — but a digest registered
    /// already (to anyone) adds nothing, and the caller refuses the tenant. A rotation's
    /// key is added by [`ADD_SECRET`], whose clash fails the statement.
    pub(crate) ADD_FIRST_SECRET = [ADD_SECRET_TEXT, " ON CONFLICT (digest) DO NOTHING"]
);

/// Whether the tenant exists, its row locked until the transaction ends on PostgreSQL (two
/// changes of one tenant take turns; SQLite's single writer runs one at a time).
pub(crate) const TENANT_LOCKED: super::Shared = super::Shared {
    sqlite: "SELECT 1 FROM tenants WHERE id = ?1",
    pg: "SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE",
};

shared_sql!(
    /// Whether the tenant has test keys.
    pub(crate) HAS_TEST_SECRETS =
        "SELECT EXISTS(SELECT 1 FROM tenant_secrets WHERE tenant_id = $1 AND test)"
);

shared_sql!(pub(crate) SET_PAGES_APPROVED = "UPDATE tenants SET pages_approved = $2 WHERE id = $1");

shared_sql!(
    pub(crate) SET_SMS =
        "UPDATE tenants SET sms_allowed_countries = $2, sms_trusted_days = $3, \
         sms_allow_fixed_line = $4 WHERE id = $1"
);

shared_sql!(
    pub(crate) SET_DKIM = "UPDATE tenants SET dkim_keys = $2, dkim_private = $3 WHERE id = $1"
);

shared_sql!(
    pub(crate) SET_SUPPRESSION_OFF = "UPDATE tenants SET suppression_off = $2 WHERE id = $1"
);

shared_sql!(
    pub(crate) SET_EMAIL_PROVIDER =
        "UPDATE tenants SET email_provider = $2, email_provider_secrets = $3 WHERE id = $1"
);

shared_sql!(
    pub(crate) SET_SMS_PROVIDER =
        "UPDATE tenants SET sms_provider = $2, sms_provider_secrets = $3 WHERE id = $1"
);

shared_sql!(
    /// The version check every change starts with (`$3`: the version that was read); no row:
    /// changed by someone else since, or gone.
    pub(crate) CLAIM_VERSION =
        "UPDATE tenants SET updated_at = $2, row_version = row_version + 1 WHERE id = $1 AND \
         row_version = $3"
);

shared_sql!(
    /// A tenant, by id.
    pub(crate) TENANT = ["SELECT ", TENANT_COLS, " FROM tenants t WHERE t.id = $1"]
);

shared_sql!(
    /// Every tenant, oldest first.
    pub(crate) TENANTS = ["SELECT ", TENANT_COLS, " FROM tenants t ORDER BY t.created_at, t.id"]
);

shared_sql!(
    /// The enabled tenant whose current (or in-grace, at `$2`) secret has digest `$1`.
    pub(crate) TENANT_BY_SECRET = ["SELECT ", TENANT_COLS,
        " FROM tenant_secrets s JOIN tenants t ON t.id = s.tenant_id WHERE s.digest = $1 AND \
         (s.expires_at IS NULL OR s.expires_at > $2) AND t.enabled"]
);
