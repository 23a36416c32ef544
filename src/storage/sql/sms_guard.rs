//! The SQL both backends run for sms guard, written once with `$n` placeholders.

shared_sql!(
    pub(crate) TRUSTED =
        "SELECT EXISTS(SELECT 1 FROM sms_trusted WHERE tenant_id = $1 AND phone = $2 AND \
         verified_at >= $3)"
);

shared_sql!(
    /// The newest SMS to the range in the hour, at most `$4` (the limit: counting past it
    /// tells nothing more, and the limit-th newest says when the range has room again).
    pub(crate) IN_RANGE =
        "SELECT COUNT(*), MIN(at) FROM (SELECT at FROM sms_sends WHERE tenant_id = $1 AND \
         range_prefix = $2 AND at > $3 ORDER BY at DESC LIMIT $4) recent"
);

shared_sql!(
    /// The newest SMS to the country whose code was not verified (marked by the verify; a
    /// code purged unverified stays unverified), at most `$4`, as above.
    pub(crate) UNVERIFIED_IN_COUNTRY =
        "SELECT COUNT(*), MIN(at) FROM (SELECT at FROM sms_sends WHERE tenant_id = $1 AND country \
         = $2 AND at > $3 AND NOT verified ORDER BY at DESC LIMIT $4) recent"
);

shared_sql!(
    pub(crate) INSERT =
        "INSERT INTO sms_sends (tenant_id, key_digest, range_prefix, country, at) VALUES ($1, $2, \
         $3, $4, $5)"
);

shared_sql!(pub(crate) RELEASE = "DELETE FROM sms_sends WHERE key_digest = $1 AND at = $2");

shared_sql!(
    /// A verified SMS code's send leaves the unverified count (`$1` its key digest); run in
    /// the verify's own transaction.
    pub(crate) VERIFIED = "UPDATE sms_sends SET verified = TRUE WHERE key_digest = $1"
);

shared_sql!(
    /// A verified SMS code trusts its number (`$1` the code's key digest, `$2` now); run in
    /// the verify's own transaction.
    pub(crate) TRUST =
        "INSERT INTO sms_trusted (tenant_id, phone, verified_at) SELECT tenant_id, \
         email_canonical, $2 FROM challenges WHERE key_digest = $1 AND channel = 'sms' ON \
         CONFLICT (tenant_id, phone) DO UPDATE SET verified_at = excluded.verified_at"
);

shared_sql!(
    /// At most `$2` of them: the purge deletes in batches (the table has no key; a code's
    /// send is its key digest and time).
    pub(crate) PURGE =
        "DELETE FROM sms_sends WHERE (key_digest, at) IN (SELECT key_digest, at FROM sms_sends \
         WHERE at < $1 LIMIT $2) AND at < $1"
);

shared_sql!(
    /// Trust older than its tenant's `sms.trusted_days` before `$1` (at once when they are
    /// 0), `$2` rows at most: it skips the velocity limits no more, and the number is kept no
    /// longer (found by the privacy audit: kept for `TRUSTED_DAYS_MAX` whatever the tenant's
    /// setting).
    pub(crate) PURGE_TRUSTED = "DELETE FROM sms_trusted WHERE (tenant_id, phone) IN \
         (SELECT s.tenant_id, s.phone FROM sms_trusted s WHERE s.verified_at < $1 - 86400000 * \
         COALESCE((SELECT t.sms_trusted_days FROM tenants t WHERE t.id = s.tenant_id), 0) \
         LIMIT $2)"
);
