//! The SQL both backends run for outbox, written once with `$n` placeholders.

shared_sql!(pub(crate) CLAIM_OUTBOX = "SELECT MIN(tenant_id) FROM outbox WHERE tenant_id > $1");

shared_sql!(
    pub(crate) RETRY_LATER =
        "UPDATE outbox SET attempts = $3, due_at = $4, lease_until = NULL, leased_by = NULL, \
         maybe_delivered = maybe_delivered OR $5 WHERE key_digest = $1 AND leased_by = $2"
);

shared_sql!(
    pub(crate) RECORD_DELIVERY_ATTEMPTS =
        "UPDATE challenges SET delivery_attempts = $2, delivery_reason = $3, delivery_detail_code \
         = $4 WHERE key_digest = $1"
);

shared_sql!(
    pub(crate) OUTBOX_DEFER =
        "UPDATE outbox SET due_at = $3, lease_until = NULL, leased_by = NULL WHERE key_digest = \
         $1 AND leased_by = $2"
);

shared_sql!(
    pub(crate) OUTBOX_FAILED =
        "UPDATE challenges SET delivery_detail_code = $2 WHERE key_digest = $1"
);

shared_sql!(pub(crate) OUTBOX_STATS = "SELECT COUNT(*), MIN(due_at) FROM outbox");

shared_sql!(
    pub(crate) GIVE_BACK_SEND =
        "DELETE FROM sends WHERE id = (SELECT id FROM sends WHERE tenant_id = $1 AND \
         email_canonical = $2 AND at = $3 LIMIT 1)"
);

shared_sql!(
    pub(crate) GIVE_BACK_TENANT_SEND =
        "UPDATE tenant_send_minutes SET sends = sends - 1 WHERE tenant_id = $1 AND minute = $2 \
         AND sends > 0"
);
