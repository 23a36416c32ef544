//! The SQL both backends run for stats, written once with `$n` placeholders.

shared_sql!(
    pub(crate) PURGE_STATS =
        "DELETE FROM stats WHERE dim IN ('all', 'purpose', 'locale', 'channel', 'domain') AND \
         hour < $1"
);
