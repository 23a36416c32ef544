//! A tenant's suppression list (API.md §16.1): recipients its mints do not send to, and why.

use super::named::named_enum;
use super::Millis;

/// Entries a page of `GET /v1/tenant/suppressions` holds.
pub const PAGE: usize = 100;

named_enum! {
    /// Why a recipient is suppressed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum SuppressionReason {
        /// A provider reported a permanent failure (soft bounces never suppress).
        HardBounce = "hard_bounce",
        /// The person marked a message as spam.
        Complaint = "complaint",
        /// Added by the tenant.
        Manual = "manual",
    }
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    /// The canonical address or E.164 number (what mints compare).
    pub recipient: String,
    pub reason: SuppressionReason,
    /// Where it came from: `api`, or the provider whose event added it.
    pub source: String,
    pub created_at: Millis,
}

/// Where a page of the list continues: after this entry (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: Millis,
    pub recipient: String,
}

impl Cursor {
    /// The opaque form handed to clients (`next_cursor`): base64url of the entry's time and
    /// recipient.
    pub fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}\n{}", self.created_at, self.recipient))
    }

    /// A cursor given back; `None` when it is not one this server made.
    pub fn decode(s: &str) -> Option<Cursor> {
        use base64::Engine;
        if !super::grammar::CURSOR.matches(s) {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (at, recipient) = text.split_once('\n')?;
        if recipient.is_empty() || recipient.len() > 320 {
            return None;
        }
        Some(Cursor {
            created_at: at.parse().ok()?,
            recipient: recipient.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        let c = Cursor {
            created_at: 1_700_000_000_000,
            recipient: "ada@example.com".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in ["", "!!", "bm90IGEgY3Vyc29y", "MTIzCg"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
        for r in ["hard_bounce", "complaint", "manual"] {
            assert_eq!(SuppressionReason::parse(r).unwrap().as_str(), r);
        }
        assert_eq!(SuppressionReason::parse("soft_bounce"), None);
    }
}
