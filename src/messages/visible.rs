//! What of a rendered HTML message a reader sees (API.md §6.29, §8): the code must stand
//! there, not only in a comment, an attribute or an element a mail client does not show.

use super::holds_code;

/// Whether HTML shows the code where a mail client shows text: not only in a comment, an
/// attribute (`alt`, `title`) or an element that is never shown (`head`, `style`, …).
pub(super) fn html_shows_code(html: &str, code: &str) -> bool {
    holds_code(&visible_text(html), code)
}

/// Elements whose content a mail client does not show as text.
const UNSHOWN: [&str; 6] = ["head", "title", "style", "script", "template", "noscript"];

/// The text of HTML a reader sees, roughly: comments, tags (with their attributes) and the
/// content of [`UNSHOWN`] elements taken out; each tag leaves a space, so that digits on
/// both sides of one are not read as one run.
fn visible_text(html: &str) -> String {
    // ASCII lower case keeps every byte offset: positions found in it hold in `html`.
    let lower = html.to_ascii_lowercase();
    let end = html.len();
    let after = |from: usize, what: &str| {
        lower[from..]
            .find(what)
            .map_or(end, |j| from + j + what.len())
    };
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
    let mut out = String::with_capacity(html.len());
    let mut i = 0;
    while i < end {
        let rest = &lower[i..];
        let opens_tag = rest.starts_with('<')
            && rest[1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?'));
        if rest.starts_with("<!-->") {
            i += 5; // an empty comment, closed at once
        } else if rest.starts_with("<!--->") {
            i += 6;
        } else if rest.starts_with("<!--") {
            i = after(i + 4, "-->");
        } else if opens_tag {
            let name: String = rest[1..].chars().take_while(|c| name_char(*c)).collect();
            i = tag_end(&lower, i);
            if UNSHOWN.contains(&name.as_str()) {
                i = element_end(&lower, i, &name);
            }
            out.push(' ');
        } else if let Some(c) = html[i..].chars().next() {
            out.push(c);
            i += c.len_utf8();
        } else {
            break;
        }
    }
    out
}

/// Where the content of the element `name` that starts at `from` ends: after its closing
/// tag (`</title>`, not `</title-bar>`), or at a `<body` for a `head` left open, or the end.
fn element_end(lower: &str, from: usize, name: &str) -> usize {
    let closing = format!("</{name}");
    let mut at = from;
    while let Some(j) = lower[at..].find(&closing) {
        let after = at + j + closing.len();
        let boundary = !lower[after..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
        if boundary {
            let closed = tag_end(lower, at + j);
            return match (name, lower[from..at + j].find("<body")) {
                ("head", Some(b)) => from + b,
                _ => closed,
            };
        }
        at = after;
    }
    match (name, lower[from..].find("<body")) {
        ("head", Some(b)) => from + b,
        _ => lower.len(),
    }
}

/// Where the tag that opens at `at` ends (after its `>`; quoted attribute values may hold
/// one), or the end of the text.
fn tag_end(lower: &str, at: usize) -> usize {
    let (mut quote, mut last) = (None, ' ');
    for (j, c) in lower[at..].char_indices() {
        match (quote, c) {
            // A quote opens a value only after `=` (`it's` in a bare word is text).
            (None, '"' | '\'') if last == '=' => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return at + j + 1,
            _ => {}
        }
        if !c.is_whitespace() {
            last = c;
        }
    }
    lower.len()
}
