//! The SQL both backends run for integration, written once with `$n` placeholders.

use crate::storage::cells::{ATTEMPT_COLS, WEBHOOK_COLS};

shared_sql!(
    pub(crate) TENANT_EXISTS = "SELECT EXISTS(SELECT 1 FROM tenants WHERE id = $1)"
);

shared_sql!(
    pub(crate) SET_WEBHOOK_URL =
        "UPDATE webhooks SET url = $2, events = $3, updated_at = $4, disabled_at = NULL, \
         disabled_reason = NULL WHERE tenant_id = $1"
);

shared_sql!(
    pub(crate) INSERT_WEBHOOK =
        "INSERT INTO webhooks (tenant_id, url, events, secret, created_at, updated_at) VALUES \
         ($1, $2, $3, $4, $5, $6)"
);

shared_sql!(
    pub(crate) DELETE_WEBHOOK = "DELETE FROM webhooks WHERE tenant_id = $1"
);

shared_sql!(
    pub(crate) DELETE_WEBHOOK_EVENTS =
        "DELETE FROM webhook_events WHERE tenant_id = $1 AND status = 'pending'"
);

shared_sql!(
    pub(crate) SET_WEBHOOK_SECRET =
        "UPDATE webhooks SET secret = $2, updated_at = $3 WHERE tenant_id = $1"
);

shared_sql!(
    pub(crate) CLAIM_EVENTS =
        "SELECT MIN(tenant_id) FROM webhook_events WHERE status = 'pending' AND tenant_id > $1"
);

shared_sql!(
    pub(crate) DEFER_EVENT =
        "UPDATE webhook_events SET due_at = $3, lease_until = NULL, leased_by = NULL WHERE id = \
         $1 AND leased_by = $2 AND status = 'pending'"
);

shared_sql!(
    pub(crate) DISABLE_WEBHOOK =
        "UPDATE webhooks SET disabled_at = $2, disabled_reason = $3 WHERE tenant_id = $1 AND url \
         = $4 AND disabled_at IS NULL"
);

shared_sql!(
    pub(crate) FAIL_PENDING_EVENTS =
        "UPDATE webhook_events SET status = 'failed', lease_until = NULL, leased_by = NULL WHERE \
         tenant_id = $1 AND status = 'pending'"
);

shared_sql!(
    pub(crate) SETTLE_EVENT =
        "UPDATE webhook_events SET attempts = $3, status = $4, due_at = $5, lease_until = NULL, \
         leased_by = NULL WHERE id = $1 AND leased_by = $2"
);

shared_sql!(
    pub(crate) RECORD_WEBHOOK_DELIVERY =
        "INSERT INTO webhook_deliveries (tenant_id, event_id, type, attempt, status_code, error, \
         at) SELECT tenant_id, id, type, $2, $3, $4, $5 FROM webhook_events WHERE id = $1"
);

shared_sql!(
    pub(crate) WEBHOOK_DELIVERIES = ["SELECT ", ATTEMPT_COLS,
        " FROM webhook_deliveries WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2"]
);

shared_sql!(
    pub(crate) IDEM_FINISH =
        "UPDATE idempotency_keys SET status = $4, response = $5, staged = NULL, \
         staged_code = NULL WHERE tenant_id = $1 AND key_digest = $2 AND holder = $3 AND \
         status IS NULL"
);

shared_sql!(
    pub(crate) IDEM_RELEASE =
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key_digest = $2 AND holder = $3 \
         AND status IS NULL"
);

shared_sql!(
    /// As [`IDEM_RELEASE`], unless the holder's code was stored with its answers: that key
    /// stays claimed until its lease runs out, and a repeat then gets the code's answer.
    pub(crate) IDEM_RELEASE_UNSTAGED =
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key_digest = $2 AND holder = $3 \
         AND status IS NULL AND staged_code IS NULL"
);

shared_sql!(
    /// The holder gives its claim back without an answer: free for the next request at `$4`.
    pub(crate) IDEM_GIVE_BACK =
        "UPDATE idempotency_keys SET lease_until = $4 WHERE tenant_id = $1 AND key_digest = $2 \
         AND holder = $3 AND status IS NULL"
);

shared_sql!(
    /// At most `$2` of them: the purge deletes in batches.
    pub(crate) PURGE_IDEMPOTENCY_KEYS =
        "DELETE FROM idempotency_keys WHERE (tenant_id, key_digest) IN (SELECT tenant_id, \
         key_digest FROM idempotency_keys WHERE expires_at <= $1 LIMIT $2) AND expires_at <= $1"
);

shared_sql!(
    /// At most `$2` of them: the purge deletes in batches.
    pub(crate) PURGE_WEBHOOK_EVENTS =
        "DELETE FROM webhook_events WHERE id IN (SELECT id FROM webhook_events WHERE \
         status <> 'pending' AND created_at < $1 LIMIT $2) AND status <> 'pending' AND \
         created_at < $1"
);

shared_sql!(
    /// At most `$2` of them: the purge deletes in batches.
    pub(crate) PURGE_WEBHOOK_DELIVERIES =
        "DELETE FROM webhook_deliveries WHERE id IN \
         (SELECT id FROM webhook_deliveries WHERE at < $1 LIMIT $2) AND at < $1"
);

shared_sql!(
    /// A tenant's webhook.
    pub(crate) WEBHOOK = ["SELECT ", WEBHOOK_COLS, " FROM webhooks WHERE tenant_id = $1"]
);

/// A webhook event, queued only when an enabled webhook of its tenant takes its type (the
/// backends test the comma-separated list each its own way).
pub(crate) const INSERT_EVENT: super::Shared = super::Shared {
    sqlite: "INSERT INTO webhook_events (id, tenant_id, type, payload, created_at, due_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?5 WHERE EXISTS (SELECT 1 FROM webhooks w \
             WHERE w.tenant_id = ?2 AND w.disabled_at IS NULL \
             AND (?3 = 'webhook.test' OR (',' || w.events || ',') LIKE ('%,' || ?3 || ',%')))",
    pg: "INSERT INTO webhook_events (id, tenant_id, type, payload, created_at, due_at) \
         SELECT $1, $2, $3, $4, $5, $5 WHERE EXISTS (SELECT 1 FROM webhooks w \
         WHERE w.tenant_id = $2 AND w.disabled_at IS NULL \
         AND ($3 = 'webhook.test' OR $3 = ANY(string_to_array(w.events, ','))))",
};

shared_sql!(
    /// A new idempotency key; nothing when the key is there already.
    pub(crate) IDEM_INSERT =
        "INSERT INTO idempotency_keys (tenant_id, key_digest, fingerprint, status, response, \
         lease_until, expires_at, holder) VALUES ($1, $2, $3, NULL, NULL, $4, $5, $6) ON CONFLICT \
         (tenant_id, key_digest) DO NOTHING"
);

shared_sql!(
    /// A free idempotency key taken by a new claim; `$7` = 1 keeps the answers its last
    /// holder staged (a holder that died: the same request again), 0 drops them (a key
    /// used again after it expired).
    pub(crate) IDEM_RETAKE =
        "UPDATE idempotency_keys SET fingerprint = $3, status = NULL, response = NULL, \
         lease_until = $4, expires_at = $5, holder = $6, \
         staged = CASE WHEN CAST($7 AS BIGINT) = 1 THEN staged ELSE NULL END, \
         staged_code = CASE WHEN CAST($7 AS BIGINT) = 1 THEN staged_code ELSE NULL END \
         WHERE tenant_id = $1 AND key_digest = $2"
);

shared_sql!(
    /// The answers of the code the key's holder stores, in the code's own transaction.
    pub(crate) IDEM_STAGE =
        "UPDATE idempotency_keys SET staged = $4, staged_code = $5 WHERE tenant_id = $1 AND \
         key_digest = $2 AND holder = $3 AND status IS NULL"
);
