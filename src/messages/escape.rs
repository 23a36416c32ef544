//! Text as a message holds it: a template's values escaped for HTML, and line breaks as
//! mail allows them.

/// A string as HTML text or an attribute's value: `&`, `<`, `>`, `"` and `'` escaped, `/`
/// left as it is (MiniJinja's escaping writes `/` as `&#x2f;`, and a link's URL in an
/// `href` then reads `http:&#x2f;&#x2f;…` to a link scanner or extractor, unlike the text
/// part's; found by the mail audit). Nothing can close a tag without a `<`.
pub(super) fn html_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// A CR that is not half of a CRLF, as the line break it means: a mail's text may hold CR
/// only before LF (RFC 2046 §4.1.1; found by the mail audit: a template's lone CR went out
/// as `=0D`, a bare CR in the text).
pub fn lone_cr_as_line_break(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\r') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() != Some(&'\n') => out.push('\n'),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}
