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
