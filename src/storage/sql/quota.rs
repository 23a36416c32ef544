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

/// A table of sends counted per tenant and minute (`tenant_send_minutes`,
/// `test_send_minutes`): `$sum`, its sends after minute `$2` and the first minute that has
/// any; `$count`, one more send in minute `$2`.
macro_rules! minute_counter {
    ($sum:ident, $count:ident, $table:literal) => {
        shared_sql!(
            pub(crate) $sum = concat!(
                "SELECT CAST(COALESCE(SUM(sends), 0) AS BIGINT), MIN(minute) FROM ",
                $table,
                " WHERE tenant_id = $1 AND minute > $2 AND sends > 0"
            )
        );
        shared_sql!(
            pub(crate) $count = concat!(
                "INSERT INTO ",
                $table,
                " (tenant_id, minute, sends) VALUES ($1, $2, 1) \
                 ON CONFLICT (tenant_id, minute) DO UPDATE SET sends = ",
                $table,
                ".sends + 1"
            )
        );
    };
}

minute_counter!(TENANT_SENDS, COUNT_TENANT_SEND, "tenant_send_minutes");
minute_counter!(TEST_SENDS, COUNT_TEST_SEND, "test_send_minutes");
