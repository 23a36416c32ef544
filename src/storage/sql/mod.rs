//! SQL text both backends run, written once. Each statement is written with PostgreSQL's
//! `$n` placeholders; SQLite reads the same text with `?n` in their place (the same length,
//! so the rewrite is done at compile time). A statement the engines write differently is a
//! [`Shared`] with two texts, or stays in its backend's file.

/// One statement as each backend runs it.
#[derive(Clone, Copy)]
pub(crate) struct Shared {
    pub(crate) pg: &'static str,
    pub(crate) sqlite: &'static str,
}

/// `text` with every `$` that starts a placeholder (`$` and a digit) made `?`.
pub(crate) const fn sqlite_placeholders<const N: usize>(text: &str) -> [u8; N] {
    let b = text.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = if b[i] == b'$' && i + 1 < N && b[i + 1].is_ascii_digit() {
            b'?'
        } else {
            b[i]
        };
        i += 1;
    }
    out
}

/// The length of `parts` joined.
pub(crate) const fn joined_len(parts: &[&str]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < parts.len() {
        n += parts[i].len();
        i += 1;
    }
    n
}

/// `parts` joined (`N`: [`joined_len`]), at compile time.
pub(crate) const fn joined<const N: usize>(parts: &[&str]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    let mut i = 0;
    while i < parts.len() {
        let b = parts[i].as_bytes();
        let mut j = 0;
        while j < b.len() {
            out[at] = b[j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    out
}

/// `shared_sql!(pub(crate) NAME = "… $1 …");` — a [`Shared`] statement.
/// `shared_sql!(pub(crate) NAME = ["SELECT ", COLS, " FROM t WHERE id = $1"]);` — one
/// joined from constant parts (a column list written once beside its mapper).
macro_rules! shared_sql {
    ($(#[$attr:meta])* $vis:vis $name:ident = [$($part:expr),+ $(,)?]) => {
        shared_sql!(
            $(#[$attr])* $vis $name = {
                const PARTS: &[&str] = &[$($part),+];
                const BYTES: [u8; $crate::storage::sql::joined_len(PARTS)] =
                    $crate::storage::sql::joined(PARTS);
                match std::str::from_utf8(&BYTES) {
                    Ok(s) => s,
                    Err(_) => panic!("joined SQL parts broke UTF-8"),
                }
            }
        );
    };
    ($(#[$attr:meta])* $vis:vis $name:ident = $text:expr) => {
        $(#[$attr])*
        $vis const $name: $crate::storage::sql::Shared = {
            const PG: &str = $text;
            const BYTES: [u8; PG.len()] = $crate::storage::sql::sqlite_placeholders(PG);
            const SQLITE: &str = match std::str::from_utf8(&BYTES) {
                Ok(s) => s,
                Err(_) => panic!("a placeholder rewrite broke UTF-8"),
            };
            $crate::storage::sql::Shared {
                pg: PG,
                sqlite: SQLITE,
            }
        };
    };
}

/// The live-code rule in SQL: pending, unexpired at `now` and with attempts left — the
/// rule [`crate::domain::challenge::live`] writes in Rust. `live_code!("$4")` for the
/// table itself, `live_code!("c.", "$4")` for an alias; a text literal, for `concat!`.
macro_rules! live_code {
    ($now:literal) => {
        $crate::storage::sql::live_code!("", $now)
    };
    ($t:literal, $now:literal) => {
        concat!(
            $t,
            "status = 'pending' AND ",
            $t,
            "expires_at > ",
            $now,
            " AND ",
            $crate::storage::sql::attempts_left!($t)
        )
    };
}
pub(crate) use live_code;

/// The live-code rule's third clause: attempts left (`attempts_left!("c.")` for an alias).
macro_rules! attempts_left {
    ($t:literal) => {
        concat!($t, "attempts < ", $t, "max_attempts")
    };
}
pub(crate) use attempts_left;

/// [`attempts_left!`] negated: a pending code with none left shows as exhausted.
macro_rules! no_attempts_left {
    ($t:literal) => {
        concat!($t, "attempts >= ", $t, "max_attempts")
    };
}
pub(crate) use no_attempts_left;

pub(crate) mod codes;
pub(crate) mod hosted;
pub(crate) mod integration;
pub(crate) mod keyring;
pub(crate) mod links;
pub(crate) mod outbox;
pub(crate) mod provider_events;
pub(crate) mod quota;
pub(crate) mod records;
pub(crate) mod sms_guard;
pub(crate) mod stats;
pub(crate) mod suppressions;
pub(crate) mod tenants;
pub(crate) mod test_mode;

/// A value bound to a shared statement, typed so that both drivers bind it: a NULL keeps
/// its type (PostgreSQL checks it), numbers are 64-bit (the tables' `BIGINT`) but for
/// `Int32` (an `INTEGER` column, which PostgreSQL types as 32 bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    /// A value of an `INTEGER` column PostgreSQL types as 32 bits.
    Int32(i32),
    Bool(bool),
    Blob(Option<Vec<u8>>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(Some(v.to_string()))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(Some(v))
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Arg {
        Arg::Text(v)
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(Some(v))
    }
}

impl From<i32> for Arg {
    fn from(v: i32) -> Arg {
        Arg::Int32(v)
    }
}

impl From<u32> for Arg {
    fn from(v: u32) -> Arg {
        Arg::Int(Some(i64::from(v)))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Arg {
        Arg::Int(v)
    }
}

impl From<bool> for Arg {
    fn from(v: bool) -> Arg {
        Arg::Bool(v)
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Arg {
        Arg::Text(v.map(str::to_string))
    }
}

impl From<usize> for Arg {
    fn from(v: usize) -> Arg {
        Arg::Int(Some(i64::try_from(v).unwrap_or(i64::MAX)))
    }
}

impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Arg {
        Arg::Blob(Some(v.to_vec()))
    }
}

impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Arg {
        Arg::Blob(Some(v))
    }
}

impl From<Option<Vec<u8>>> for Arg {
    fn from(v: Option<Vec<u8>>) -> Arg {
        Arg::Blob(v)
    }
}

/// One statement of a write and the values it binds, the same on both backends: a write
/// whose steps depend only on its input is built once (`storage::tenants`) and run in
/// order inside the caller's transaction (`storage::tenants::run_steps`).
#[derive(Clone)]
pub(crate) struct Step {
    pub(crate) sql: Shared,
    pub(crate) args: Vec<Arg>,
}

/// A [`Step`] of `sql` with `args` (`$1`, `$2`, … in order).
pub(crate) fn step<const N: usize>(sql: Shared, args: [Arg; N]) -> Step {
    Step {
        sql,
        args: args.into(),
    }
}

#[cfg(test)]
mod tests {
    shared_sql!(EXAMPLE = "SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '$x'");

    const COLS: &str = "a, b";
    shared_sql!(JOINED = ["SELECT ", COLS, " FROM t WHERE id = $1"]);

    #[test]
    fn a_statement_joined_from_parts_reads_as_written_on_both_backends() {
        assert_eq!(JOINED.pg, "SELECT a, b FROM t WHERE id = $1");
        assert_eq!(JOINED.sqlite, "SELECT a, b FROM t WHERE id = ?1");
    }

    #[test]
    fn the_live_code_rule_reads_the_same_for_a_table_and_an_alias() {
        assert_eq!(
            live_code!("$4"),
            "status = 'pending' AND expires_at > $4 AND attempts < max_attempts"
        );
        assert_eq!(
            live_code!("c.", "?2"),
            "c.status = 'pending' AND c.expires_at > ?2 AND c.attempts < c.max_attempts"
        );
    }

    #[test]
    fn sqlite_reads_numbered_question_marks_where_postgres_reads_dollars() {
        assert_eq!(
            EXAMPLE.sqlite,
            "SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d = '$x'"
        );
        assert_eq!(
            EXAMPLE.pg,
            "SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '$x'"
        );
    }
}
