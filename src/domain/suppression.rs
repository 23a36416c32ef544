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

    /// A cursor given back; `None` when it is not in the form this server gives out: its
    /// exact encoding of a time (a whole number of milliseconds, as written here, up to the
    /// year 9999) and a recipient (an address or `+` number, no control character or space).
    pub fn decode(s: &str) -> Option<Cursor> {
        use base64::Engine;
        /// 9999-12-31T23:59:59.999Z.
        const LAST: Millis = 253_402_300_799_999;
        if !super::grammar::CURSOR.matches(s) {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (at, recipient) = text.split_once('\n')?;
        let created_at: Millis = at.parse().ok()?;
        let recipient_like = !recipient.is_empty()
            // A folded local part may be three times the bytes it was given in.
            && recipient.len() <= 1024
            && (recipient.contains('@') || recipient.starts_with('+'))
            && !recipient
                .chars()
                .any(|c| c.is_control() || c.is_whitespace());
        let cursor = Cursor {
            created_at,
            recipient: recipient.to_string(),
        };
        // One spelling each: `+5`, `05`, padding and the like are not what encode() writes.
        let exact = (0..=LAST).contains(&created_at) && cursor.encode() == s;
        (recipient_like && exact).then_some(cursor)
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
        assert_eq!(Cursor::decode(&c.encode()), Some(c.clone()));
        for bad in ["", "!!", "bm90IGEgY3Vyc29y", "MTIzCg"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
        // Forged ones found by the differential audit: each answered 200 (and the NUL one
        // 500 on PostgreSQL).
        use base64::Engine;
        let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
        for forged in [
            "-1\nx@example.com",
            "+5\nx@example.com",
            "05\nx@example.com",
            "5\nx\ny",
            "5\nx@exa\u{0}mple.com",
            "5\nada @example.com",
            "5\nnobody",
            "9223372036854775807\nx@example.com",
        ] {
            assert_eq!(Cursor::decode(&b64(forged)), None, "{forged:?}");
        }
        let padded = format!("{}=", c.encode());
        assert_eq!(Cursor::decode(&padded), None);
        let phone = Cursor {
            created_at: 0,
            recipient: "+15551234567".into(),
        };
        assert_eq!(Cursor::decode(&phone.encode()), Some(phone));
        for r in ["hard_bounce", "complaint", "manual"] {
            assert_eq!(SuppressionReason::parse(r).unwrap().as_str(), r);
        }
        assert_eq!(SuppressionReason::parse("soft_bounce"), None);
    }
}
