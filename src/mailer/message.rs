//! A message as it goes on the wire (API.md §8): UTF-8 throughout, `text/plain` alone or
//! `multipart/alternative` with the text part first and HTML second, an RFC 2047 subject,
//! `Date`, `Message-ID` and `Auto-Submitted: auto-generated`. Bodies are 7bit when they are
//! ASCII with lines of at most 998 characters (kept whole), else quoted-printable — which
//! never encodes a digit and never breaks a line inside the code (`qp.rs`), so the code
//! stays a readable run of digits in the raw message.

use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};

use super::{fail, hello_name, DeliveryError, DeliveryReason, Outgoing, SmtpTarget};

/// A fresh `<random@sender-domain>` Message-ID.
pub fn new_message_id(from: &str) -> String {
    let id = crate::domain::keys::random_id(24);
    format!("<{id}@{}>", hello_name(from))
}

fn body(s: &str) -> Body {
    // Rendering made a lone CR a line break already; a message queued before that did not.
    let s = &*crate::messages::lone_cr_as_line_break(s);
    if let Some(lines) = seven_bit(s) {
        // lettre takes 7bit only for lines under 76 characters and would quote-print a longer
        // one, breaking it (perhaps inside the code) with soft line breaks; RFC 5322 §2.1.1
        // allows 998, so ASCII text up to that goes as it is, its lines ended by CRLF.
        return Body::dangerous_pre_encoded(lines.into_bytes(), ContentTransferEncoding::SevenBit);
    }
    // Quoted-printable accepts any input; ours breaks lines between words (`qp.rs`).
    Body::dangerous_pre_encoded(
        super::qp::encode(s).into_bytes(),
        ContentTransferEncoding::QuotedPrintable,
    )
}

/// `s` with CRLF line endings when it can go as 7bit (RFC 2045 §2.7): ASCII, no NUL and no
/// CR but before LF, and no line over 998 characters.
fn seven_bit(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len() + s.len() / 32);
    for (i, line) in s.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !line.is_ascii() || line.len() > 998 || line.contains(['\r', '\0']) {
            return None;
        }
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str(line);
    }
    Some(out)
}

/// A subject with text that reads as an RFC 2047 encoded word (`=?utf-8?q?x?=`), as RFC 2047
/// encoded words whole. lettre leaves an ASCII word as it is, and a mail client would decode
/// that one into other text than the tenant wrote; encoded, it shows as written.
fn subject_encoded_whole(subject: &str) -> Option<HeaderValue> {
    use base64::Engine;
    if !subject.contains("=?") {
        return None;
    }
    let mut words = Vec::new();
    let mut rest = subject;
    while !rest.is_empty() {
        // 39 bytes: 52 characters of base64, a folded line of at most 73.
        let mut end = rest.len().min(39);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (word, after) = rest.split_at(end);
        let b64 = base64::engine::general_purpose::STANDARD.encode(word);
        words.push(format!("=?utf-8?b?{b64}?="));
        rest = after;
    }
    Some(HeaderValue::dangerous_new_pre_encoded(
        HeaderName::new_from_ascii_str("Subject"),
        subject.to_string(),
        words.join("\r\n "),
    ))
}

/// A sender whose name is printable ASCII with a character lettre quotes no other way than
/// by an RFC 2047 encoded word (`,` `:` `@` `'` and the like: `"Acme, Inc."`), as a quoted
/// string (RFC 5322 §3.2.4). Spam filters count an encoded word a name did not need against
/// the message (SpamAssassin's FROM_EXCESS_BASE64; found by the mail audit). Other names go
/// as lettre writes them: plain or quoted, or encoded when not ASCII, or when they hold text
/// that reads as an encoded word (`=?`), which some clients decode even inside quotes.
fn from_quoted(from: &Mailbox) -> Option<HeaderValue> {
    let name = from.name.as_deref()?;
    let lettre_quotes = |b: u8| b.is_ascii_alphanumeric() || b" -_.\\\"".contains(&b);
    if name.is_empty()
        || name.contains("=?")
        || !name.bytes().all(|b| (0x20..0x7f).contains(&b))
        || name.bytes().all(lettre_quotes)
    {
        return None;
    }
    let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
    Some(HeaderValue::dangerous_new_pre_encoded(
        HeaderName::new_from_ascii_str("From"),
        from.to_string(),
        format!("\"{escaped}\" <{}>", from.email),
    ))
}

fn part(s: &str, kind: ContentType) -> SinglePart {
    SinglePart::builder().header(kind).body(body(s))
}

pub(super) fn render(
    target: &SmtpTarget,
    msg: &Outgoing<'_>,
) -> Result<(lettre::address::Envelope, Vec<u8>), DeliveryError> {
    let mut from: Mailbox = target
        .from
        .parse()
        .map_err(|e| fail(DeliveryReason::Rejected, format!("bad from: {e}")))?;
    // An internationalized sender domain goes out in its A-label form, in the envelope and
    // the header: the relay need not offer SMTPUTF8 for it, and DKIM's d= is that name.
    if !from.email.domain().is_ascii() {
        if let Some(a) = idna::domain_to_ascii(from.email.domain())
            .ok()
            .and_then(|d| Address::new(from.email.user(), d).ok())
        {
            from.email = a;
        }
    }
    let to: Address = msg
        .to
        .parse()
        .map_err(|e| fail(DeliveryReason::Rejected, format!("bad recipient: {e}")))?;
    let message_id = match msg.message_id {
        Some(id) => id.to_string(),
        None => new_message_id(&target.from),
    };
    let envelope = lettre::address::Envelope::new(Some(from.email.clone()), vec![to.clone()])
        .map_err(|e| fail(DeliveryReason::Rejected, e))?;
    let builder = match from_quoted(&from) {
        Some(quoted) => Message::builder().raw_header(quoted),
        None => Message::builder().from(from),
    };
    let builder = builder.envelope(envelope).to(Mailbox::new(None, to));
    let builder = match subject_encoded_whole(msg.subject) {
        Some(subject) => builder.raw_header(subject),
        None => builder.subject(msg.subject),
    };
    let builder = builder
        .message_id(Some(message_id))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".into(),
        ));
    let message = match msg.html {
        None => builder.singlepart(part(msg.text, ContentType::TEXT_PLAIN)),
        Some(html) => builder.multipart(
            MultiPart::alternative()
                .singlepart(part(msg.text, ContentType::TEXT_PLAIN))
                .singlepart(part(html, ContentType::TEXT_HTML)),
        ),
    }
    .map_err(|e| fail(DeliveryReason::Rejected, e))?;
    // Unsigned: the caller adds the DKIM signature (`dkim::sign_off_worker`).
    Ok((message.envelope().clone(), message.formatted()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailer::TlsMode;

    fn target() -> SmtpTarget {
        SmtpTarget {
            tenant_id: "tnt_x".into(),
            version: 1,
            host: "smtp.example.com".into(),
            port: 587,
            username: "u".into(),
            auth: super::super::SmtpAuth::Password(secrecy::SecretString::from("p".to_string())),
            from: "Acme <no-reply@acme.example>".into(),
            tls: TlsMode::Starttls,
        }
    }

    /// A message to ada@example.com as it goes on the wire (no DKIM), and its envelope.
    fn rendered(
        t: &SmtpTarget,
        subject: &str,
        text: &str,
        html: Option<&str>,
        message_id: Option<&str>,
    ) -> (lettre::address::Envelope, String) {
        let out = Outgoing {
            to: "ada@example.com",
            subject,
            text,
            html,
            message_id,
            dkim: None,
            before_body: None,
        };
        let (envelope, raw) = render(t, &out).unwrap();
        (envelope, String::from_utf8(raw).unwrap())
    }

    #[test]
    fn multipart_utf8_headers_and_the_code_in_every_part() {
        let long = format!("{}\r\n", "Bestätigung ".repeat(20));
        let text = format!("{long}Ihr Code:\r\n    407139\r\n");
        let html = format!("<p>{long}</p>\r\n<div style=\"x\">\r\n407139\r\n</div>");
        let (_, raw) = rendered(
            &target(),
            "Ihr Bestätigungscode für Acme",
            &text,
            Some(&html),
            None,
        );
        assert!(raw.contains("Auto-Submitted: auto-generated\r\n"));
        assert!(raw.contains("Message-ID: <"));
        assert!(raw.contains("Date: "));
        let subject = raw.lines().find(|l| l.starts_with("Subject: ")).unwrap();
        assert!(subject.contains("=?utf-8?b?"), "{subject}");
        assert!(raw.contains("multipart/alternative"));
        let plain = raw.find("text/plain; charset=utf-8").unwrap();
        let html_at = raw.find("text/html; charset=utf-8").unwrap();
        assert!(plain < html_at, "text part first");
        assert_eq!(raw.matches("407139").count(), 2);
        assert!(raw.contains("quoted-printable"));
        assert!(raw.is_ascii());
    }

    /// A lone CR is a line break on the wire, in a 7bit part and a quoted-printable one
    /// alike; a CRLF stays one.
    #[test]
    fn a_lone_cr_goes_as_a_line_break() {
        let (_, raw) = rendered(&target(), "Code", "Code\r\n407139\rnext\r", None, None);
        assert!(raw.contains("Code\r\n407139\r\nnext\r\n"), "{raw}");
        let (_, raw) = rendered(&target(), "Code", "Für\r407139\r\nnext", None, None);
        assert!(!raw.contains("=0D"), "{raw}");
        assert!(raw.contains("F=C3=BCr\r\n407139\r\nnext"), "{raw}");
        assert_eq!(
            raw.matches('\r').count(),
            raw.matches("\r\n").count(),
            "{raw}"
        );
    }

    /// A printable ASCII name goes as a quoted string, never as an encoded word it does not
    /// need (`"Acme, Inc."`); a name that is not ASCII, or reads as an encoded word, is
    /// encoded; the envelope's sender is the address either way.
    #[test]
    fn a_sender_name_with_specials_goes_quoted_not_encoded() {
        for (from, header) in [
            (
                "\"Acme, Inc.\" <no-reply@acme.example>",
                "From: \"Acme, Inc.\" <no-reply@acme.example>\r\n",
            ),
            (
                "\"Acme: Support\" <no-reply@acme.example>",
                "From: \"Acme: Support\" <no-reply@acme.example>\r\n",
            ),
            (
                "O'Brien Ltd <no-reply@acme.example>",
                "From: \"O'Brien Ltd\" <no-reply@acme.example>\r\n",
            ),
            (
                "\"Say \\\"hi\\\", @home\" <no-reply@acme.example>",
                "From: \"Say \\\"hi\\\", @home\" <no-reply@acme.example>\r\n",
            ),
            (
                "Acme Inc. <no-reply@acme.example>",
                "From: \"Acme Inc.\" <no-reply@acme.example>\r\n",
            ),
        ] {
            let t = SmtpTarget {
                from: from.into(),
                ..target()
            };
            let (envelope, raw) = rendered(&t, "Code", "123456\r\n", None, None);
            assert!(raw.contains(header), "{from}: {raw}");
            assert_eq!(
                raw.matches("\r\nFrom: ").count() + usize::from(raw.starts_with("From: ")),
                1,
                "{raw}"
            );
            let sender = envelope.from().map(|a| a.to_string());
            assert_eq!(sender.as_deref(), Some("no-reply@acme.example"));
        }
        for from in [
            "\"Café, Inc.\" <no-reply@acme.example>",
            "\"=?utf-8?q?Bank?=, Inc.\" <no-reply@acme.example>",
        ] {
            let t = SmtpTarget {
                from: from.into(),
                ..target()
            };
            let (_, raw) = rendered(&t, "Code", "123456\r\n", None, None);
            let line = raw.lines().find(|l| l.starts_with("From: ")).unwrap();
            assert!(line.starts_with("From: =?utf-8?b?"), "{from}: {line}");
        }
    }

    #[test]
    fn an_internationalized_sender_domain_goes_out_as_its_a_label() {
        let t = SmtpTarget {
            from: "Bücher <codes@Bücher.example>".into(),
            ..target()
        };
        let (envelope, raw) = rendered(&t, "Code", "123456\r\n", None, None);
        let from = envelope.from().map(|a| a.to_string());
        assert_eq!(from.as_deref(), Some("codes@xn--bcher-kva.example"));
        assert!(raw.is_ascii(), "{raw}");
        assert!(raw.contains("<codes@xn--bcher-kva.example>"), "{raw}");
        assert!(
            raw.contains("@xn--bcher-kva.example>\r\n"),
            "Message-ID: {raw}"
        );
        assert_eq!(hello_name(&t.from), "xn--bcher-kva.example");
    }

    #[test]
    fn a_subject_that_reads_as_an_encoded_word_is_encoded_whole() {
        use base64::Engine;
        let subject = "Şifre: 407139 «test» =?utf-8?q?notreally?= and a long tail of words";
        let (_, raw) = rendered(&target(), subject, "407139\r\n", None, None);
        assert!(!raw.contains("notreally"), "{raw}");
        let head = &raw[raw.find("Subject: ").unwrap() + 9..];
        let mut decoded = Vec::new();
        let mut lines = 0;
        for (i, line) in head.split("\r\n").enumerate() {
            if i > 0 && !line.starts_with(' ') {
                break;
            }
            lines += 1;
            assert!(line.len() + if i == 0 { 9 } else { 0 } <= 78, "{line}");
            let b64 = line.trim().strip_prefix("=?utf-8?b?").unwrap();
            let b64 = b64.strip_suffix("?=").unwrap();
            decoded.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            );
        }
        assert!(lines > 1);
        assert_eq!(String::from_utf8(decoded).unwrap(), subject);
        // Any other subject goes as lettre writes it.
        assert!(subject_encoded_whole("Ihr Code für Acme").is_none());
    }

    #[test]
    fn plain_ascii_stays_a_single_7bit_part() {
        let (_, raw) = rendered(
            &target(),
            "Your code",
            "Code:\r\n\r\n    123456\r\n",
            None,
            Some("<a@acme.example>"),
        );
        assert!(raw.contains("Content-Transfer-Encoding: 7bit"));
        assert!(!raw.contains("multipart"));
        assert!(raw.contains("Message-ID: <a@acme.example>"));
    }

    #[test]
    fn a_long_ascii_line_goes_whole_as_7bit_so_the_code_is_never_broken() {
        let line = format!(
            "{}481516 and more words to pass the 76th column",
            "a".repeat(72)
        );
        let text = format!("Hello,\n{line}\nBye\n");
        let (_, raw) = rendered(
            &target(),
            "Your code",
            &text,
            Some(&format!("<p>{line}</p>")),
            None,
        );
        assert_eq!(
            raw.matches("Content-Transfer-Encoding: 7bit").count(),
            2,
            "{raw}"
        );
        assert!(!raw.contains("quoted-printable"), "{raw}");
        assert_eq!(raw.matches(&format!("{line}\r\n")).count(), 1, "{raw}");
        assert_eq!(raw.matches("481516").count(), 2, "{raw}");
        assert!(
            !raw.replace("\r\n", "").contains('\n'),
            "only CRLF line ends: {raw}"
        );
        // Past 998 characters, or not ASCII, the body is quoted-printable.
        assert!(seven_bit(&"a".repeat(999)).is_none());
        assert!(seven_bit(&"a".repeat(998)).is_some());
        assert!(seven_bit("Grüße 123456").is_none());
        assert!(seven_bit("a\rb").is_none(), "a bare CR");
        assert_eq!(seven_bit("a\nb\r\nc").as_deref(), Some("a\r\nb\r\nc"));
    }
}
