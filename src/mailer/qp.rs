//! Quoted-printable (RFC 2045 §6.7) for bodies that cannot go as 7bit, with its soft line
//! breaks put between words: a run of ASCII letters and digits — the code — is split only
//! when it is longer than a line. A reader that decodes sees no difference; one that looks
//! for the code in the raw message (a filter, a test harness, a person reading the source)
//! finds it whole. lettre's encoder breaks at the 76th column wherever that falls, inside
//! the code of a long non-ASCII line.

/// Characters of an encoded line before its soft break's `=` (RFC 2045: 76 in all).
const WIDTH: usize = 75;

/// `s` encoded, its line breaks as CRLF (a bare CR is encoded as data).
pub(super) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    let lines = s.split('\n').count();
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        // A CR before LF is the line break's; a CR at the very end is data.
        let line = match i + 1 < lines {
            true => line.strip_suffix('\r').unwrap_or(line),
            false => line,
        };
        encode_line(line, &mut out);
    }
    out
}

fn encode_line(line: &str, out: &mut String) {
    // The encoded line being filled; `safe` is where in it a soft break splits no word
    // (0: nowhere yet).
    let mut cur = String::new();
    let mut safe = 0;
    let mut last_was_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        let at_end = chars.peek().is_none();
        let word = c.is_ascii_alphanumeric();
        if !(word && last_was_word) {
            safe = cur.len();
        }
        let mut atom = String::new();
        match c {
            // Printable ASCII but `=` as it is; a space or tab too unless it ends the line.
            '!'..='<' | '>'..='~' => atom.push(c),
            ' ' | '\t' if !at_end => atom.push(c),
            _ => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    atom.push_str(&format!("={b:02X}"));
                }
            }
        }
        if cur.len() + atom.len() > WIDTH {
            // Break at the last place between words, else (a run longer than a line) here.
            let at = if safe > 0 && cur.len() - safe + atom.len() <= WIDTH {
                safe
            } else {
                cur.len()
            };
            let rest = cur.split_off(at);
            out.push_str(&cur);
            out.push_str("=\r\n");
            cur = rest;
            safe = if word && last_was_word { 0 } else { cur.len() };
        }
        cur.push_str(&atom);
        last_was_word = word;
    }
    out.push_str(&cur);
}

#[cfg(test)]
mod tests {
    use super::encode;

    fn decode(s: &str) -> String {
        let bytes = quoted_printable::decode(s, quoted_printable::ParseMode::Strict).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn it_decodes_to_the_input_in_lines_of_76_printable_characters() {
        let long = "Grüße aus München, ".repeat(12);
        let cases = [
            String::new(),
            "plain".into(),
            "a = b\t\nnext line \r\nend ".into(),
            "trailing tab\t".into(),
            "a\rbare CR and a NUL \0 here".into(),
            "日本語のテキスト 123456 です。".repeat(5),
            format!("{long}\n\n{long}"),
            "x".repeat(300),
            format!("{}=", "ä".repeat(40)),
            "ü\r".into(),
            "a\r\r\nb".into(),
        ];
        for input in &cases {
            let encoded = encode(input);
            let want = input.replace("\r\n", "\n").replace('\n', "\r\n");
            assert_eq!(decode(&encoded), want, "{encoded}");
            for line in encoded.split("\r\n") {
                assert!(line.len() <= 76, "{line:?}");
                assert!(
                    line.bytes()
                        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic()),
                    "{line:?}"
                );
                assert!(!line.ends_with([' ', '\t']), "{line:?}");
            }
            assert!(!encoded.replace("\r\n", "").contains(['\r', '\n']));
        }
    }

    #[test]
    fn the_code_is_never_split_wherever_it_falls_in_a_long_line() {
        let line = |prefix: &str, lead| {
            format!(
                "{}Ihr Bestätigungscode lautet <b>407139</b>. Er gilt 10 Minuten.",
                prefix.repeat(lead)
            )
        };
        // The check can fail: the plain encoder (lettre's) splits it at some offsets.
        let split = (0..80)
            .filter(|&lead| !quoted_printable::encode_to_str(line("ü", lead)).contains("407139"))
            .count();
        assert!(split > 0);
        for lead in 0..80 {
            for prefix in ["a", "ü", "語", " "] {
                let line = line(prefix, lead);
                let encoded = encode(&line);
                assert!(encoded.contains("407139"), "{encoded}");
                assert_eq!(decode(&encoded), line);
            }
        }
        // A run longer than a line is split where it must be.
        let run = "7".repeat(200);
        let encoded = encode(&run);
        assert!(encoded.split("\r\n").count() > 2);
        assert_eq!(decode(&encoded), run);
    }
}
