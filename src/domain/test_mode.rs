//! Test mode (API.md §13.1–13.2): which recipients a tenant's mints go to its test inbox for
//! instead of a relay — an exact address or number (optionally with a fixed code), or a
//! pattern with `*` — and the messages that land there.

use super::email::RecipientEmail;
use super::policy::FieldError;
use super::Millis;

/// Entries a tenant may list.
pub const MAX_RECIPIENTS: usize = 100;
/// How far ahead an entry may expire.
pub const MAX_LIFETIME_MS: Millis = 90 * 86_400_000;
/// Messages a tenant's test inbox keeps, and for how long.
pub const INBOX_KEPT: usize = 100;
pub const INBOX_KEPT_MS: Millis = 3_600_000;

/// Which recipients an entry covers, matched against a recipient's canonical form
/// (addresses case-folded with an ASCII domain; numbers in E.164).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientPattern {
    /// One address or number.
    Exact(String),
    /// `*` stands for any run of characters: `*@test.acme.example`, `+1555*`.
    Wildcard(String),
}

/// A number as mints see it ([`super::recipient::PhoneNumber::parse`]); one that is not in
/// E.164 form as given.
fn canonical_number(s: &str) -> String {
    super::recipient::PhoneNumber::parse(s)
        .map_or_else(|| s.to_string(), |p| p.as_str().to_string())
}

impl RecipientPattern {
    pub fn parse(s: &str) -> Result<RecipientPattern, FieldError> {
        let bad = |m: &str| FieldError::new("match", m);
        // Not trimmed: white space or a line break around it is refused, as in every other
        // recipient field.
        if s.len() > 254 || !super::grammar::RECIPIENT_PATTERN.matches(s) {
            return Err(bad("must be an address, a number, or a pattern with *"));
        }
        if s.contains('*') {
            return wildcard(s).map(RecipientPattern::Wildcard).ok_or_else(|| {
                if s.starts_with('+') {
                    bad("a number pattern is + and 4 to 14 digits then one * at the end (e.g. +1555*)")
                } else {
                    bad("a pattern is an address with * in its local part and a whole domain (e.g. *@test.acme.example)")
                }
            });
        }
        if let Some(digits) = s.strip_prefix('+') {
            if (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) {
                return Ok(RecipientPattern::Exact(canonical_number(s)));
            }
            return Err(bad("a number is E.164: + and 8 to 15 digits"));
        }
        let email = RecipientEmail::parse(s).map_err(|e| bad(&e.to_string()))?;
        Ok(RecipientPattern::Exact(email.canonical().to_string()))
    }

    /// The stored form.
    pub fn as_str(&self) -> &str {
        match self {
            RecipientPattern::Exact(s) | RecipientPattern::Wildcard(s) => s,
        }
    }

    /// The stored form read back (it was parsed when stored). An address's local part is
    /// folded again: one stored before keys were case-folded was only lower-cased (folding
    /// a lower-cased or folded text gives the text's fold).
    pub fn from_stored(s: String) -> RecipientPattern {
        let s = match s.rsplit_once('@') {
            Some((local, domain)) if !s.starts_with('+') => {
                format!("{}@{domain}", super::email::fold_case(local))
            }
            // A number stored before numbers had one spelling.
            None if !s.contains('*') => canonical_number(&s),
            _ => s,
        };
        if s.contains('*') {
            RecipientPattern::Wildcard(s)
        } else {
            RecipientPattern::Exact(s)
        }
    }

    pub fn is_exact(&self) -> bool {
        matches!(self, RecipientPattern::Exact(_))
    }

    /// Whether it may catch recipients while the sender's domain is `from_domain`: an email
    /// wildcard's scope depends on it; an exact entry and a number pattern (whose scope is
    /// the numbering plan's, checked when saved) do not.
    pub fn in_scope(&self, from_domain: Option<&str>) -> bool {
        match self {
            RecipientPattern::Wildcard(p) if !p.starts_with('+') => {
                self.check_scope(from_domain).is_ok()
            }
            _ => true,
        }
    }

    /// Whether a number pattern lies in a range that holds no valid numbers (API.md §17.8);
    /// anything else: true. One stored by an earlier version, before the rule, that could
    /// catch real people's numbers catches nobody, as an email wildcard out of its scope does.
    /// Costly (it samples the range): checked when a list is read into the tenant's cached
    /// list (once per version of it), not at every mint.
    pub fn number_range_allowed(&self) -> bool {
        match self {
            RecipientPattern::Wildcard(p) if p.starts_with('+') => {
                phone_pattern_catches_real_numbers(p).is_none()
            }
            _ => true,
        }
    }

    /// Whether a wildcard could catch only the tenant's own or fictional recipients
    /// (API.md §17.8): `*@` the tenant's `from` domain (or a subdomain of it) or a name
    /// reserved by RFC 6761; a sub-address `name+*@domain`; a number pattern only in
    /// ranges libphonenumber holds invalid. `from_domain`: the tenant's sender's domain.
    pub fn check_scope(&self, from_domain: Option<&str>) -> Result<(), FieldError> {
        let RecipientPattern::Wildcard(p) = self else {
            return Ok(());
        };
        if p.starts_with('+') {
            return match phone_pattern_catches_real_numbers(p) {
                None => Ok(()),
                Some(example) => Err(FieldError::new(
                    "match",
                    format!("could catch real people's numbers (such as {example}): a number pattern must lie in a range that holds no valid numbers, such as +1555*"),
                )),
            };
        }
        let Some((local, domain)) = p.rsplit_once('@') else {
            return Err(FieldError::new("match", "is not a pattern of addresses"));
        };
        // A sub-address of one mailbox: name+*@domain.
        if let Some(name) = local.strip_suffix("+*") {
            if !name.is_empty() && !name.contains('*') && !name.contains('+') {
                return Ok(());
            }
        }
        // A sender on a shared mailbox provider (gmail.com), on a public suffix (co.uk,
        // github.io: names under it belong to other people) or a bare top-level name does not
        // make that domain the tenant's own: its other addresses are real people's.
        let own = from_domain.is_some_and(|f| {
            let f = f.to_ascii_lowercase();
            super::public_suffix::has_one_owner(&f)
                && (domain == f || domain.ends_with(&format!(".{f}")))
        });
        if local == "*" && (own || reserved_domain(domain)) {
            return Ok(());
        }
        Err(FieldError::new(
            "match",
            "could catch real people's addresses: a pattern is *@ the tenant's from domain (or a subdomain of it), *@ a reserved name (.test, .example, .invalid, .localhost, example.com), or a sub-address such as qa+*@acme.example",
        ))
    }

    /// Whether a recipient (its canonical form) is covered.
    pub fn matches(&self, canonical: &str) -> bool {
        match self {
            RecipientPattern::Exact(s) => s == canonical,
            RecipientPattern::Wildcard(p) => glob(p.as_bytes(), canonical.as_bytes()),
        }
    }
}

/// A pattern's stored form, if it is narrow enough: an address whose `*` are all in the local
/// part and whose domain is a whole one (`*@*` would catch every person's code), or a number
/// with at least 4 digits before its first `*`.
fn wildcard(s: &str) -> Option<String> {
    if let Some(rest) = s.strip_prefix('+') {
        // Digits, then one `*` at the end: what a number could continue with (E.164 numbers
        // have at most 15 digits, so the pattern at most 14 before its `*`).
        let digits = rest.strip_suffix('*')?;
        let ok = (4..=14).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit());
        return ok.then(|| s.to_string());
    }
    let (local, domain) = s.rsplit_once('@')?;
    if local.is_empty() || local.contains('@') {
        return None;
    }
    // The domain must be one an address could have: checked with a stand-in local part.
    let domain = RecipientEmail::parse(&format!("x@{domain}")).ok()?;
    let domain = domain.canonical().rsplit_once('@')?.1.to_string();
    Some(format!("{}@{domain}", super::email::fold_case(local)))
}

/// Names RFC 6761 (and RFC 2606) keep from real use.
fn reserved_domain(domain: &str) -> bool {
    const TLDS: [&str; 4] = ["test", "example", "invalid", "localhost"];
    const NAMES: [&str; 3] = ["example.com", "example.net", "example.org"];
    let last = domain.rsplit('.').next().unwrap_or(domain);
    TLDS.contains(&last)
        || NAMES
            .iter()
            .any(|n| domain == *n || domain.ends_with(&format!(".{n}")))
}

/// A valid number a phone pattern would match, if the pattern's range holds any: its `*`
/// filled with many runs of digits (fixed ones and a deterministic spread) to every length
/// E.164 allows. `None`: libphonenumber holds every sampled number invalid.
fn phone_pattern_catches_real_numbers(pattern: &str) -> Option<String> {
    let digits = pattern.trim_start_matches('+');
    let fixed = digits.chars().filter(|c| *c != '*').count();
    let stars = digits.chars().filter(|c| *c == '*').count().max(1);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for total in 8..=15usize {
        let Some(free) = total.checked_sub(fixed) else {
            continue;
        };
        if free < stars {
            continue;
        }
        for sample in 0..48u32 {
            let fill: String = (0..free)
                .map(|i| {
                    let d = match sample {
                        0..=9 => sample,
                        10 => (i as u32) % 10,
                        11 => 9 - (i as u32) % 10,
                        _ => {
                            seed = seed
                                .wrapping_mul(6_364_136_223_846_793_005)
                                .wrapping_add(1_442_695_040_888_963_407);
                            ((seed >> 33) % 10) as u32
                        }
                    };
                    char::from_digit(d, 10).unwrap_or('0')
                })
                .collect();
            // The first `*` takes all but one digit per other `*`.
            let mut rest = fill.chars();
            let first = free - (stars - 1);
            let mut n = String::from("+");
            let mut first_star = true;
            for c in digits.chars() {
                if c == '*' {
                    let take = if first_star { first } else { 1 };
                    first_star = false;
                    n.extend(rest.by_ref().take(take));
                } else {
                    n.push(c);
                }
            }
            if super::numbering::is_valid_number(&n) {
                return Some(n);
            }
        }
    }
    None
}

/// `*` as any run of bytes; everything else literal (iterative, no backtracking blow-up).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// A tenant's test recipient as stored (a fixed code only as its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecipient {
    pub pattern: RecipientPattern,
    /// A fixed code's hash and length (exact recipients only).
    pub fixed: Option<FixedCode>,
    pub expires_at: Millis,
    /// When its fixed code's failure budget ran out (API.md §17.3): inert until stored again.
    pub disabled_at: Option<Millis>,
}

/// A test recipient's fixed code, as stored: its hash (made like every code's) and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedCode {
    pub hash: String,
    pub length: u32,
}

/// The first live entry that covers a recipient: an exact one before any pattern. An email
/// wildcard's scope is checked again against the sender of the moment (`from_domain`,
/// API.md §17.8): one saved while the sender was at another domain catches nobody.
pub fn find<'a>(
    list: &'a [TestRecipient],
    canonical: &str,
    now: Millis,
    from_domain: Option<&str>,
) -> Option<&'a TestRecipient> {
    let live = || {
        list.iter()
            .filter(move |t| t.expires_at > now && t.pattern.in_scope(from_domain))
    };
    live()
        .find(|t| t.pattern.is_exact() && t.pattern.matches(canonical))
        .or_else(|| live().find(|t| t.pattern.matches(canonical)))
}

/// A message in a tenant's test inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestMessage {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub received_at: Millis,
}

#[cfg(test)]
#[path = "test_mode_tests.rs"]
mod tests;
