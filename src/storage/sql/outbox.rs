//! The SQL both backends run for outbox, written once with `$n` placeholders.

shared_sql!(pub(crate) CLAIM_OUTBOX = "SELECT MIN(tenant_id) FROM outbox WHERE tenant_id > $1");

shared_sql!(
    pub(crate) RETRY_LATER =
        "UPDATE outbox SET attempts = $3, due_at = $4, lease_until = NULL, leased_by = NULL, \
         unstarted = FALSE, maybe_delivered = maybe_delivered OR $5 WHERE key_digest = $1 AND leased_by = $2"
);

shared_sql!(
    pub(crate) RECORD_DELIVERY_ATTEMPTS =
        "UPDATE challenges SET delivery_attempts = $2, delivery_reason = $3, delivery_detail_code \
         = $4 WHERE key_digest = $1"
);

shared_sql!(
    /// The sync messages `$1` holds the lease of (no other process touches them while the
    /// lease runs), whether or not their code has expired meanwhile, and the message of key
    /// `$2` if it holds that one's: the caller names the ones it knows were never sent.
    pub(crate) LEASED_UNSENT =
        "SELECT o.key_digest FROM outbox o JOIN challenges c ON c.key_digest = o.key_digest \
         WHERE o.leased_by = $1 AND (c.delivery_mode = 'sync' OR o.key_digest = $2)"
);

shared_sql!(
    pub(crate) OUTBOX_DEFER =
        "UPDATE outbox SET due_at = COALESCE($3, due_at), lease_until = NULL, leased_by = NULL, \
         unstarted = FALSE WHERE key_digest = $1 AND leased_by = $2"
);

shared_sql!(
    pub(crate) OUTBOX_FAILED =
        "UPDATE challenges SET delivery_detail_code = $2 WHERE key_digest = $1"
);

shared_sql!(
    /// The holder (`$2`) of a message's lease (`$1`) begins its send: from now on a lease
    /// that runs out is an interrupted send (`unknown`), not one never begun.
    pub(crate) SEND_STARTED =
        "UPDATE outbox SET unstarted = FALSE WHERE key_digest = $1 AND leased_by = $2"
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

shared_sql!(
    /// The lease holder's row (`$1` key, `$2` owner), deleted: whoever deletes it settles.
    pub(crate) DELETE_HELD =
        "DELETE FROM outbox WHERE key_digest = $1 AND leased_by = $2"
);

shared_sql!(
    /// A sync send the sweep recorded as `unknown` (its outcome may still arrive).
    pub(crate) DELIVERY_UNKNOWN =
        "SELECT 1 FROM challenges WHERE key_digest = $1 AND delivery_status = 'unknown'"
);

shared_sql!(
    /// A code's group — tenant, canonical recipient, purpose, flavor — and its number in it.
    pub(crate) GROUP_OF =
        "SELECT tenant_id, email_canonical, purpose, flavor, seq FROM challenges WHERE \
         key_digest = $1"
);

shared_sql!(
    /// The relay took the message (`$4`: by the lease's holder; else only over an
    /// `unknown` the sweep recorded): its delivery record, the code's state and tally.
    pub(crate) MARK_SENT = [
        "UPDATE challenges SET delivery_status = 'sent', delivery_attempts = $2, \
         delivery_reason = NULL, sent_at = $3, delivery_transport = $5, provider_message_id = \
         $6, delivery_detail_code = NULL WHERE key_digest = $1 AND ($4 OR delivery_status = \
         'unknown') RETURNING status, ",
        crate::storage::stats::TALLY_COLS,
    ]
);

shared_sql!(
    /// The group's older pending, live codes (`$1`–`$4` the group, `$5` the accepted code's
    /// number, `$6` now), superseded.
    pub(crate) SUPERSEDE_OLDER = concat!(
        "UPDATE challenges SET status = 'superseded', ended_at = $6 WHERE tenant_id = $1 AND \
         email_canonical = $2 AND purpose = $3 AND flavor = $4 AND seq < $5 AND ",
        super::live_code!("$6")
    )
);

shared_sql!(
    /// A message's row (`$1`), deleted — only `$2`'s lease's, when given — with what it
    /// carried.
    pub(crate) TAKE_ROW =
        "DELETE FROM outbox WHERE key_digest = $1 AND (CAST($2 AS TEXT) IS NULL OR leased_by = \
         $2) RETURNING maybe_delivered, quota_at, created_at, channel, \
         attempts"
);

shared_sql!(
    /// A message given up on (`$1` key, `$2` attempts or NULL, `$3` reason, `$4` now, `$5`
    /// whether the code fails, `$6` delivery status, `$7`/`$8` the statistics states): the
    /// code fails only while pending and never sent (`rules::GIVING_UP_FAILS_KEY`), and
    /// one that fails before its expiry is counted `failed` here, not expired later.
    pub(crate) GIVE_UP = [
        "UPDATE challenges SET status = CASE WHEN $5 AND ",
        crate::storage::rules::GIVING_UP_FAILS_KEY,
        " THEN 'failed' ELSE status END, ended_at = CASE WHEN $5 AND ",
        crate::storage::rules::GIVING_UP_FAILS_KEY,
        " THEN $4 ELSE ended_at END, stats_state = CASE WHEN $5 AND ",
        crate::storage::rules::GIVING_UP_FAILS_KEY,
        " AND expires_at > $4 AND stats_state = $7 THEN $8 ELSE stats_state END, \
         delivery_status = $6, delivery_reason = $3, delivery_attempts = COALESCE($2, \
         delivery_attempts) WHERE key_digest = $1 RETURNING ",
        crate::storage::stats::TALLY_COLS,
    ]
);
