//! The SQL both backends run for provider events, written once with `$n` placeholders.

use crate::storage::stats::TALLY_COLS;

shared_sql!(
    /// An enabled tenant's row version and webhook event types, as [`VerifiedWith`](crate::storage::provider_events::VerifiedWith)
    /// holds them.
    pub(crate) VERIFIED_WITH =
        "SELECT t.row_version, COALESCE((SELECT w.events FROM webhooks w WHERE w.tenant_id = \
         t.id), '') FROM tenants t WHERE t.id = $1 AND t.enabled"
);

shared_sql!(
    pub(crate) SEEN =
        "INSERT INTO provider_events (tenant_id, provider, event_id, received_at) VALUES ($1, $2, \
         $3, $4) ON CONFLICT (tenant_id, provider, event_id) DO NOTHING"
);
shared_sql!(
    /// [`SEEN`] for a Mailgun token, taken once across tenants: a unique index holds one
    /// row a token (V21), so a second taker, at once or later, records nothing (0 rows).
    pub(crate) SEEN_ANYWHERE =
        "INSERT INTO provider_events (tenant_id, provider, event_id, received_at) VALUES ($1, $2, \
         $3, $4) ON CONFLICT DO NOTHING"
);
shared_sql!(
    /// The code the message was about: its delivery is marked bounced (a complaint's too).
    pub(crate) MARK_BOUNCED = [
        "UPDATE challenges SET delivery_status = 'bounced' WHERE tenant_id = $1 AND \
         provider_message_id = $2 RETURNING ", TALLY_COLS
    ]
);
shared_sql!(
    pub(crate) PIN =
        "SELECT event_id FROM provider_events WHERE tenant_id = $1 AND provider = $2 ORDER BY \
         received_at, event_id LIMIT 1"
);

shared_sql!(
    /// Pins (`…-pin`) are not events: they stay. At most `$2` of them: the purge deletes
    /// in batches.
    pub(crate) PURGE =
        "DELETE FROM provider_events WHERE (tenant_id, provider, event_id) IN (SELECT \
         tenant_id, provider, event_id FROM provider_events WHERE received_at < $1 AND \
         provider NOT LIKE '%-pin' LIMIT $2) AND received_at < $1 AND provider NOT LIKE '%-pin'"
);
