#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Reading received messages as a mail client would: headers (unfolded), RFC 2047 subjects,
//! multipart bodies, quoted-printable and base64 parts.

use base64::Engine;

/// The first run of 4-10 ASCII digits.
pub fn first_code(s: &str) -> Option<String> {
    let mut run = String::new();
    for c in s.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            if (4..=10).contains(&run.len()) {
                return Some(run);
            }
            run.clear();
        }
    }
    None
}

pub(super) fn header_in(head: &str, name: &str) -> Option<String> {
    // Unfold continuation lines first.
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .split("\r\n")
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim().to_string())
}

/// (content type, decoded body without its trailing line breaks) of every leaf part.
pub(super) fn parts(entity: &str) -> Vec<(String, String)> {
    let (head, body) = entity.split_once("\r\n\r\n").unwrap_or((entity, ""));
    let ct = header_in(head, "Content-Type").unwrap_or_else(|| "text/plain".into());
    if ct.to_ascii_lowercase().starts_with("multipart/") {
        let Some(boundary) = ct.split(';').find_map(|p| {
            p.trim()
                .strip_prefix("boundary=")
                .map(|b| b.trim_matches('"').to_string())
        }) else {
            return vec![];
        };
        let delim = format!("--{boundary}");
        return body
            .split(delim.as_str())
            .skip(1)
            .take_while(|p| !p.starts_with("--"))
            .flat_map(|p| parts(p.trim_start_matches("\r\n")))
            .collect();
    }
    let cte = header_in(head, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let decoded = match cte.as_str() {
        "quoted-printable" => decode_qp(body),
        "base64" => {
            let clean: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(clean)
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => body.to_string(),
    };
    // The line break before a boundary or the end of DATA belongs to the framing.
    vec![(ct, decoded.trim_end_matches(['\r', '\n']).to_string())]
}

fn decode_qp(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                i += 3;
                continue;
            }
            if let Some(h) = b.get(i + 1..i + 3) {
                if let Ok(v) = u8::from_str_radix(std::str::from_utf8(h).unwrap_or("zz"), 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decode RFC 2047 encoded words (`=?utf-8?b?…?=` / `?q?`); whitespace between two
/// encoded words goes.
pub(super) fn decode_words(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let before = &rest[..start];
        let tail = &rest[start + 2..];
        let word = tail.split_once("?=").and_then(|(inner, after)| {
            let mut it = inner.splitn(3, '?');
            let (_charset, enc, text) = (it.next()?, it.next()?, it.next()?);
            let bytes = match enc.to_ascii_lowercase().as_str() {
                "b" => base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()?,
                "q" => decode_qp(&text.replace('_', " ")).into_bytes(),
                _ => return None,
            };
            Some((String::from_utf8_lossy(&bytes).into_owned(), after))
        });
        match word {
            Some((w, after)) => {
                if !(last_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&w);
                rest = after;
                last_was_word = true;
            }
            None => {
                out.push_str(&rest[..start + 2]);
                rest = tail;
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}
