//! The SQL both backends run for quota, written once with `$n` placeholders.

shared_sql!(
    pub(crate) FAILURES_BLOCKED =
        "SELECT failures, window_start FROM recipient_failures WHERE tenant_id = $1 AND \
         email_canonical = $2"
);

shared_sql!(
    pub(crate) LAST_SEND =
        "SELECT MAX(at) FROM sends WHERE tenant_id = $1 AND email_canonical = $2"
);

shared_sql!(
    pub(crate) SENDS_IN_WINDOW =
        "SELECT COUNT(*), MIN(at) FROM sends WHERE tenant_id = $1 AND email_canonical = $2 AND at \
         > $3"
);

shared_sql!(
    pub(crate) TAKE_SEND = "INSERT INTO sends (tenant_id, email_canonical, at) VALUES ($1, $2, $3)"
);

shared_sql!(
    /// The tenant's sends after minute `$2`, and the first minute that has any.
    pub(crate) TENANT_SENDS =
        "SELECT CAST(COALESCE(SUM(sends), 0) AS BIGINT), MIN(minute) FROM tenant_send_minutes \
         WHERE tenant_id = $1 AND minute > $2 AND sends > 0"
);

shared_sql!(
    pub(crate) COUNT_TENANT_SEND =
        "INSERT INTO tenant_send_minutes (tenant_id, minute, sends) VALUES ($1, $2, 1) \
         ON CONFLICT (tenant_id, minute) DO UPDATE SET sends = tenant_send_minutes.sends + 1"
);

shared_sql!(
    /// The tenant's test sends after minute `$2`, and the first minute that has any.
    pub(crate) TEST_SENDS =
        "SELECT CAST(COALESCE(SUM(sends), 0) AS BIGINT), MIN(minute) FROM test_send_minutes \
         WHERE tenant_id = $1 AND minute > $2 AND sends > 0"
);

shared_sql!(
    pub(crate) COUNT_TEST_SEND =
        "INSERT INTO test_send_minutes (tenant_id, minute, sends) VALUES ($1, $2, 1) \
         ON CONFLICT (tenant_id, minute) DO UPDATE SET sends = test_send_minutes.sends + 1"
);
