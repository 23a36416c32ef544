//! Statistics (API.md §13.4): what is counted about a code, by which dimension, and how a
//! period's counts become a row — conversion and the time to verify, from a histogram.

use super::named::named_enum;
use super::Millis;

pub const HOUR_MS: Millis = 3_600_000;
/// Upper bounds (seconds) of the time-to-verify buckets; the last bucket is open.
pub const VERIFY_BUCKETS: [u32; 14] = [
    5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 1800, 3600,
];
pub const BUCKETS: usize = VERIFY_BUCKETS.len() + 1;
/// The widest range one query may cover, and the most rows it may answer.
pub const MAX_RANGE_DAYS: i64 = 400;
pub const MAX_ROWS: usize = 10_000;

named_enum! {
    /// A dimension counts are kept by (ordered as a code's cells are written).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub enum Dim {
        All = "all",
        Purpose = "purpose",
        Locale = "locale",
        Channel = "channel",
        Domain = "domain",
    }
}

impl Dim {
    pub const GROUPS: [Dim; 4] = [Dim::Purpose, Dim::Locale, Dim::Channel, Dim::Domain];

    /// A `group_by` value.
    pub fn parse_group(s: &str) -> Option<Dim> {
        Dim::GROUPS.into_iter().find(|d| d.as_str() == s)
    }
}

/// What happened to a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Minted,
    Sent,
    Failed,
    /// With the seconds from mint to verify.
    Verified(u64),
    ExpiredUnverified,
    /// A test mint (it counts nowhere else).
    Test,
    /// A mint the SMS fraud guard refused (API.md §17.1), by its reason.
    Blocked(BlockReason),
    /// A provider reported a hard bounce of the message (API.md §16.2).
    Bounced,
    /// The person marked the message as spam.
    Complained,
}

named_enum! {
    /// Why the SMS fraud guard refused a mint, as statistics and `otp.blocked` name it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum BlockReason {
        CountryNotAllowed = "country_not_allowed",
        NumberNotAllowed = "number_not_allowed",
        Velocity = "velocity",
    }
}

impl Counted {
    /// The column it adds one to.
    pub fn column(self) -> &'static str {
        match self {
            Counted::Minted => "minted",
            Counted::Sent => "sent",
            Counted::Failed => "failed",
            Counted::Verified(_) => "verified",
            Counted::ExpiredUnverified => "expired_unverified",
            Counted::Test => "test",
            Counted::Blocked(BlockReason::CountryNotAllowed) => "blocked_country",
            Counted::Blocked(BlockReason::NumberNotAllowed) => "blocked_number",
            Counted::Blocked(BlockReason::Velocity) => "blocked_velocity",
            Counted::Bounced => "bounced",
            Counted::Complained => "complained",
        }
    }

    /// The time-to-verify bucket it adds one to.
    pub fn bucket(self) -> Option<usize> {
        match self {
            Counted::Verified(secs) => Some(
                VERIFY_BUCKETS
                    .iter()
                    .position(|b| secs <= u64::from(*b))
                    .unwrap_or(VERIFY_BUCKETS.len()),
            ),
            _ => None,
        }
    }
}

/// A code's values of each dimension: what its counts are kept under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeDims {
    pub purpose: String,
    pub locale: String,
    pub channel: String,
    /// The recipient's domain (empty for a number).
    pub domain: String,
}

impl CodeDims {
    /// From a code's stored values (`recipient`: its canonical form).
    pub fn of(purpose: &str, locale: Option<&str>, channel: &str, recipient: &str) -> CodeDims {
        CodeDims {
            purpose: purpose.to_string(),
            locale: locale.unwrap_or("").to_string(),
            channel: channel.to_string(),
            domain: recipient
                .rsplit_once('@')
                .map(|(_, d)| d.to_string())
                .unwrap_or_default(),
        }
    }

    /// Every (dimension, value) a count goes to.
    pub fn cells(&self) -> [(Dim, &str); 5] {
        [
            (Dim::All, ""),
            (Dim::Purpose, &self.purpose),
            (Dim::Locale, &self.locale),
            (Dim::Channel, &self.channel),
            (Dim::Domain, &self.domain),
        ]
    }
}

/// The hour a code's counts are kept under: its mint's.
pub fn hour_of(created_at: Millis) -> i64 {
    created_at.div_euclid(HOUR_MS)
}

/// Whole seconds from a code's mint to its verify.
pub fn verify_secs(created_at: Millis, verified_at: Millis) -> u64 {
    u64::try_from((verified_at - created_at).max(0) / 1000).unwrap_or(0)
}

/// Counts of one period (and group), summed from the stored cells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub minted: i64,
    pub sent: i64,
    pub failed: i64,
    pub verified: i64,
    pub expired_unverified: i64,
    pub test: i64,
    pub buckets: [i64; BUCKETS],
    /// Mints the SMS fraud guard refused, in the order of [`BlockReason::ALL`].
    pub blocked: [i64; 3],
    /// Hard bounces and complaints providers reported (API.md §16.2).
    pub bounced: i64,
    pub complained: i64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.minted += o.minted;
        self.sent += o.sent;
        self.failed += o.failed;
        self.verified += o.verified;
        self.expired_unverified += o.expired_unverified;
        self.test += o.test;
        for (a, b) in self.blocked.iter_mut().zip(o.blocked.iter()) {
            *a += b;
        }
        self.bounced += o.bounced;
        self.complained += o.complained;
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a += b;
        }
    }

    /// Verified over minted (None before any mint).
    pub fn conversion_rate(&self) -> Option<f64> {
        (self.minted > 0).then(|| self.verified as f64 / self.minted as f64)
    }

    /// The seconds from mint to verify under which a share `q` of the verified codes fell,
    /// interpolated within its bucket (the open last bucket answers its lower bound).
    pub fn seconds_to_verify(&self, q: f64) -> Option<f64> {
        let total: i64 = self.buckets.iter().sum();
        if total <= 0 {
            return None;
        }
        let target = q * total as f64;
        let mut seen = 0.0;
        for (i, n) in self.buckets.iter().enumerate() {
            let n = *n as f64;
            if n > 0.0 && seen + n >= target {
                let lo = if i == 0 {
                    0.0
                } else {
                    f64::from(VERIFY_BUCKETS[i - 1])
                };
                let Some(hi) = VERIFY_BUCKETS.get(i).map(|b| f64::from(*b)) else {
                    return Some(lo);
                };
                return Some(lo + (hi - lo) * ((target - seen) / n).clamp(0.0, 1.0));
            }
            seen += n;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_verify_falls_in_the_bucket_of_its_seconds() {
        assert_eq!(Counted::Verified(0).bucket(), Some(0));
        assert_eq!(Counted::Verified(5).bucket(), Some(0));
        assert_eq!(Counted::Verified(6).bucket(), Some(1));
        assert_eq!(Counted::Verified(3600).bucket(), Some(13));
        assert_eq!(Counted::Verified(3601).bucket(), Some(14));
        assert_eq!(Counted::Sent.bucket(), None);
    }

    #[test]
    fn percentiles_interpolate_within_buckets() {
        let mut c = Counts::default();
        // 10 verifies within 5 s, 10 within 5–10 s.
        c.buckets[0] = 10;
        c.buckets[1] = 10;
        assert_eq!(c.seconds_to_verify(0.5), Some(5.0));
        assert_eq!(c.seconds_to_verify(0.75), Some(7.5));
        assert_eq!(c.seconds_to_verify(0.25), Some(2.5));
        c.buckets = [0; BUCKETS];
        c.buckets[14] = 3;
        assert_eq!(c.seconds_to_verify(0.9), Some(3600.0), "the open bucket");
        assert_eq!(Counts::default().seconds_to_verify(0.5), None);
    }

    #[test]
    fn dims_take_the_domain_of_an_address_and_none_of_a_number() {
        let d = CodeDims::of("login", Some("de"), "email", "ada@example.com");
        assert_eq!(d.domain, "example.com");
        assert_eq!(
            CodeDims::of("login", None, "sms", "+4915112345678").domain,
            ""
        );
        assert_eq!(d.cells()[0], (Dim::All, ""));
        assert_eq!(Dim::parse_group("domain"), Some(Dim::Domain));
        assert_eq!(Dim::parse_group("all"), None);
    }
}
