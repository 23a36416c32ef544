//! Time, injected: the system clock in production, a manual clock in tests.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::domain::Millis;

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now(&self) -> Millis;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told (tests of expiry and windows).
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Millis) -> ManualClock {
        ManualClock(AtomicI64::new(start))
    }
    pub fn starting_now() -> ManualClock {
        ManualClock::new(SystemClock.now())
    }
    pub fn advance_secs(&self, secs: i64) {
        self.advance_millis(secs * 1000);
    }
    pub fn advance_millis(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// RFC 3339 in UTC with second precision, as the API shows times.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// A time given as RFC 3339, or as a date (`2026-11-24`: its midnight, UTC) written as
/// exactly that: four, two and two digits (chrono's `%Y-%m-%d` alone also takes `2026-1-5`,
/// `+2026-11-24` and leading spaces).
pub fn parse_time(s: &str) -> Option<Millis> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !shaped {
        return None;
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn a_date_is_four_two_and_two_digits_and_nothing_else() {
        assert_eq!(parse_time("2026-01-05"), Some(1_767_571_200_000));
        assert_eq!(parse_time("2026-01-05T00:00:00Z"), Some(1_767_571_200_000));
        for bad in [
            "2026-1-5",
            "2026-1-05",
            "+2026-01-05",
            " 2026-01-05",
            "2026-01-05 ",
            "2026-02-30",
            "２０２６-01-05",
            "",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }
}
