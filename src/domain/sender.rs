//! A tenant's sender: one mailbox (`Acme <no-reply@acme.example>`), checked when it is set,
//! and its 7-bit form for APIs that take a sender as text.

use lettre::message::Mailbox;

use super::policy::FieldError;

/// The sender of a tenant's messages: one mailbox, like `Acme <no-reply@acme.example>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender(String);

impl Sender {
    pub fn parse(s: &str) -> Result<Sender, FieldError> {
        let s = s.trim();
        if s.len() > 320 || !valid_mailbox(s) {
            return Err(FieldError::new(
                "smtp.from",
                "must be one mailbox, like \"Acme <no-reply@acme.example>\"",
            ));
        }
        // The name a person's mail client shows: as a tenant's name, nothing that shows
        // otherwise than it is (a right-to-left override, a zero width, a C1 control).
        if s.chars().any(super::grammar::deceptive) {
            return Err(FieldError::new(
                "smtp.from",
                "must have no control, invisible or bidirectional-control characters",
            ));
        }
        Ok(Sender(s.to_string()))
    }
    pub fn from_stored(s: String) -> Sender {
        Sender(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The mailbox in 7-bit ASCII, as an API that takes a sender as text may require
    /// (Amazon SES): a non-ASCII name as an RFC 2047 encoded-word, the domain in its IDNA
    /// ASCII form. An ASCII mailbox is returned as stored.
    pub fn seven_bit(&self) -> String {
        use base64::Engine;
        if self.0.is_ascii() {
            return self.0.clone();
        }
        let Some((name, email)) = self.with_ascii_domain() else {
            return self.0.clone();
        };
        match name {
            // Encoded-words of at most 75 characters (RFC 2047 §2): 45 bytes of the name,
            // cut between characters, in each.
            Some(name) if !name.is_ascii() => {
                let mut words = Vec::new();
                let mut chunk = String::new();
                for c in name.chars() {
                    if chunk.len() + c.len_utf8() > 45 {
                        words.push(std::mem::take(&mut chunk));
                    }
                    chunk.push(c);
                }
                words.push(chunk);
                let encoded: Vec<String> = words
                    .iter()
                    .map(|w| {
                        let b64 = base64::engine::general_purpose::STANDARD.encode(w.as_bytes());
                        format!("=?UTF-8?B?{b64}?=")
                    })
                    .collect();
                format!("{} <{email}>", encoded.join(" "))
            }
            name => Mailbox::new(name, email).to_string(),
        }
    }
}

impl Sender {
    /// The mailbox with its domain in its IDNA ASCII form and its name as it is, as an API
    /// that takes the sender in JSON (and encodes the name itself) wants it.
    pub fn ascii_domain(&self) -> String {
        if self.0.is_ascii() {
            return self.0.clone();
        }
        match self.with_ascii_domain() {
            Some((name, email)) => Mailbox::new(name, email).to_string(),
            None => self.0.clone(),
        }
    }

    fn with_ascii_domain(&self) -> Option<(Option<String>, lettre::Address)> {
        let m = self.0.parse::<Mailbox>().ok()?;
        let domain = idna::domain_to_ascii(m.email.domain())
            .unwrap_or_else(|_| m.email.domain().to_string());
        let email = lettre::Address::new(m.email.user(), domain).ok()?;
        Some((m.name, email))
    }
}

/// One mailbox and nothing else (no list, no header injection). A comma is one only inside a
/// quoted display name (`"Acme, Inc." <no-reply@acme.example>`); elsewhere it would make a
/// list. lettre's parser refuses trailing text itself; the scan keeps the rule here, whatever
/// a later lettre does.
fn valid_mailbox(s: &str) -> bool {
    !s.contains(['\r', '\n']) && !comma_outside_quotes(s) && s.parse::<Mailbox>().is_ok()
}

/// Whether `s` holds a comma outside a quoted string (RFC 5322 §3.2.4, `\` escaping).
fn comma_outside_quotes(s: &str) -> bool {
    let (mut quoted, mut escaped) = (false, false);
    for c in s.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => return true,
            _ => {}
        }
    }
    false
}

/// A tenant's name made from its sender, as OtpMint registration and the import name
/// tenants (API.md §18.8): the address's domain as written — a display name and angle
/// brackets left out — else the sender itself; at most 100 characters, none a control.
pub fn name_from_sender(mail: &str) -> String {
    let addr = mail
        .rsplit_once('<')
        .map_or(mail, |(_, a)| a.trim().trim_end_matches('>'))
        .trim();
    addr.rsplit_once('@')
        .map(|(_, domain)| domain.trim())
        .filter(|domain| !domain.is_empty())
        .unwrap_or(mail)
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_tenant_is_named_after_its_senders_domain_without_the_display_name() {
        for (from, name) in [
            ("no-reply@acme.example", "acme.example"),
            ("Acme <no-reply@acme.example>", "acme.example"),
            (
                "\"Acme, Inc\" <no-reply@sub.acme.example>",
                "sub.acme.example",
            ),
            ("no-reply@bücher.example", "bücher.example"),
            ("no-domain", "no-domain"),
        ] {
            assert_eq!(super::name_from_sender(from), name, "{from}");
        }
    }

    use super::Sender;

    #[test]
    fn a_display_name_shows_as_it_is() {
        // Found by a black-box audit: these went out in From, shown as something else.
        for bad in [
            "\u{202E}elppA <no-reply@acme.example>",
            "Pay\u{200B}Pal <no-reply@acme.example>",
            "Acme\u{85}Y <no-reply@acme.example>",
            "Acme\u{2028}X <no-reply@acme.example>",
            "Acme\u{AD}Soft <no-reply@acme.example>",
            "Acme\u{FEFF} <no-reply@acme.example>",
        ] {
            assert_eq!(
                Sender::parse(bad).unwrap_err().field,
                "smtp.from",
                "{bad:?}"
            );
        }
        for ok in [
            "Bücher & Co <no-reply@acme.example>",
            "東京 <a@acme.example>",
            "مرحبا <a@acme.example>",
            // Text, not tricks: ZWNJ (Persian spelling), an emoji's ZWJ and variation
            // selector, French no-break spaces.
            "فروشگاه\u{200C}ما <a@acme.example>",
            "Dev \u{1F469}\u{200D}\u{1F4BB} <a@acme.example>",
            "Love \u{2764}\u{FE0F} <a@acme.example>",
            "Acme\u{A0}Codes\u{202F}Mail <a@acme.example>",
        ] {
            assert!(Sender::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_comma_is_taken_only_inside_a_quoted_display_name() {
        for ok in [
            "\"Acme, Inc.\" <no-reply@acme.example>",
            "\"Acme \\\"Tools\\\", Inc.\" <no-reply@acme.example>",
            "Acme <no-reply@acme.example>",
        ] {
            assert!(Sender::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Acme, Inc. <no-reply@acme.example>",
            "a@acme.example, b@acme.example",
            "\"Acme\" <a@acme.example>, b@acme.example",
            "Acme <no-reply@acme.example>\r\nBcc: x@evil.example",
        ] {
            assert!(Sender::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_sender_for_a_json_api_has_its_domain_in_ascii_and_its_name_as_it_is() {
        let ascii = |s: &str| Sender::parse(s).unwrap().ascii_domain();
        assert_eq!(
            ascii("Acme <no-reply@acme.example>"),
            "Acme <no-reply@acme.example>"
        );
        assert_eq!(
            ascii("Äcme Straße <no-reply@bücher.example>"),
            "Äcme Straße <no-reply@xn--bcher-kva.example>"
        );
        assert_eq!(
            ascii("no-reply@bücher.example"),
            "no-reply@xn--bcher-kva.example"
        );
        assert_eq!(
            ascii("Müller <no-reply@acme.example>"),
            "Müller <no-reply@acme.example>"
        );
    }

    #[test]
    fn a_sender_in_seven_bits_encodes_its_name_and_its_domain_only_when_needed() {
        let seven = |s: &str| Sender::parse(s).unwrap().seven_bit();
        assert_eq!(
            seven("Acme <no-reply@acme.example>"),
            "Acme <no-reply@acme.example>"
        );
        assert_eq!(
            seven("Müller <no-reply@acme.example>"),
            "=?UTF-8?B?TcO8bGxlcg==?= <no-reply@acme.example>"
        );
        assert_eq!(
            seven("Acme <no-reply@bücher.example>"),
            "Acme <no-reply@xn--bcher-kva.example>"
        );
        assert_eq!(
            seven("no-reply@bücher.example"),
            "no-reply@xn--bcher-kva.example"
        );
        // A long name: several encoded-words, none over 75 characters, that decode to it.
        let name = "Служба поддержки клиентов Акме";
        let long = seven(&format!("{name} <no-reply@acme.example>"));
        let (words, addr) = long.split_once(" <").unwrap();
        assert_eq!(addr, "no-reply@acme.example>");
        let mut decoded = Vec::new();
        for w in words.split(' ') {
            assert!(
                w.len() <= 75 && w.starts_with("=?UTF-8?B?") && w.ends_with("?="),
                "{w}"
            );
            use base64::Engine;
            decoded.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(&w[10..w.len() - 2])
                    .unwrap(),
            );
        }
        assert!(words.contains(' '), "{long}");
        assert_eq!(String::from_utf8(decoded).unwrap(), name);
    }
}
