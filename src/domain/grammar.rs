//! The form of values the API takes, stated once (API.md §18.5): each parser checks its
//! value against its grammar here, and the API description (`routes::openapi`) publishes
//! the same pattern and lengths. Rules that are not about form — a code's length being the
//! tenant's, an address's domain resolving — stay with their parsers.

use std::sync::OnceLock;

use regex::Regex;

/// A pattern (ECMA-262 with Unicode code points, Python `re` and Rust `regex` alike: no
/// look-around, no escapes only one of them reads) and lengths in characters, as JSON Schema
/// counts them.
pub struct Grammar {
    pub pattern: &'static str,
    pub min_length: usize,
    pub max_length: usize,
    compiled: OnceLock<Option<Regex>>,
}

impl Grammar {
    const fn new(pattern: &'static str, min_length: usize, max_length: usize) -> Grammar {
        Grammar {
            pattern,
            min_length,
            max_length,
            compiled: OnceLock::new(),
        }
    }

    /// Whether `s` has this form.
    pub fn matches(&self, s: &str) -> bool {
        (self.min_length..=self.max_length).contains(&s.chars().count())
            && self
                .compiled
                .get_or_init(|| Regex::new(self.pattern).ok())
                .as_ref()
                .is_some_and(|re| re.is_match(s))
    }
}

/// A language tag (API.md §8): 2–35 letters, digits and `-`, in subtags none of which is
/// empty (`en`, `pt-BR`, `zh-Hant-TW`, `x-private`).
pub static LOCALE: Grammar = Grammar::new("^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", 2, 35);

/// A code's purpose.
pub static PURPOSE: Grammar = Grammar::new("^[a-z0-9_.-]{1,64}$", 1, 64);

/// A phone number in E.164 form: `+`, then 8 to 15 digits, the first not 0.
pub static PHONE: Grammar = Grammar::new("^\\+[1-9][0-9]{7,14}$", 9, 16);

/// A DNS name of two labels or more (letters, digits and inner `-`), an optional final dot;
/// its last label starts with a letter, as every top-level domain does — so an IP address
/// (`127.0.0.1`) is no domain name.
pub static DNS_NAME: Grammar = Grammar::new(
    "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$",
    3,
    254,
);

/// A DKIM selector: labels of letters, digits and inner `-`, joined by dots.
pub static DKIM_SELECTOR: Grammar = Grammar::new(
    "^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$",
    1,
    63,
);

/// A PKCE S256 challenge: unpadded base64url of 32 bytes (its last character carries 4 bits).
pub static CODE_CHALLENGE: Grammar = Grammar::new("^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$", 43, 43);

/// A PKCE verifier (RFC 7636): 43–128 unreserved characters.
pub static CODE_VERIFIER: Grammar = Grammar::new("^[A-Za-z0-9._~-]{43,128}$", 43, 128);

/// A brand colour: `#RRGGBB`.
pub static BRAND_COLOR: Grammar = Grammar::new("^#[0-9A-Fa-f]{6}$", 7, 7);

/// An `Idempotency-Key` header: 1–255 visible ASCII characters.
pub static IDEMPOTENCY_KEY: Grammar = Grammar::new("^[!-~]{1,255}$", 1, 255);

/// A suppression-list cursor as the server gives it out: unpadded base64url.
pub static CURSOR: Grammar = Grammar::new("^[A-Za-z0-9_-]*$", 0, 1024);

/// The characters a tenant's name must not hold (API.md §17.8), as the inside of a
/// character class of literal characters: controls; white space other than the plain space;
/// bidirectional controls (they reorder what a page shows); zero-width, invisible and other
/// format characters (every one of Unicode's category Cf), fillers, blanks and variation
/// selectors. Listed, not named by category: Python's `re`, which reads the published
/// pattern, has no `\p{…}`.
macro_rules! name_refused {
    () => {
        concat!(
            "\u{0}-\u{1F}\u{7F}-\u{9F}",                          // controls
            "\u{A0}\u{AD}\u{34F}\u{61C}", // no-break space, soft hyphen, CGJ, ALM
            "\u{600}-\u{605}\u{6DD}\u{70F}\u{890}\u{891}\u{8E2}", // Arabic, Syriac format marks
            "\u{115F}\u{1160}\u{1680}\u{17B4}\u{17B5}", // Hangul fillers, ogham space, Khmer
            "\u{180B}-\u{180F}",          // Mongolian selectors and separator
            "\u{2000}-\u{200F}",          // spaces, zero widths, LRM, RLM
            "\u{2028}-\u{202F}",          // separators, bidi embeddings, NNBSP
            "\u{205F}-\u{206F}",          // word joiner, invisibles, isolates
            "\u{2800}",                   // Braille blank: shows as nothing
            "\u{3000}\u{3164}\u{FE00}-\u{FE0F}\u{FEFF}\u{FFA0}\u{FFF0}-\u{FFFC}",
            "\u{110BD}\u{110CD}\u{13430}-\u{1343F}\u{1BCA0}-\u{1BCA3}", // format controls
            "\u{1D159}\u{1D173}-\u{1D17A}", // null notehead, musical format marks
            "\u{E0000}-\u{E0FFF}",          // tags, selectors, and the rest of that ignorable block
        )
    };
}

/// Unicode's control characters (`char::is_control`, category Cc), as the inside of a
/// character class of literal characters.
macro_rules! controls {
    () => {
        "\u{0}-\u{1F}\u{7F}-\u{9F}"
    };
}

/// Unicode's white space outside the controls (`char::is_whitespace`, which `str::trim`
/// takes away), as the inside of a character class.
macro_rules! spaces {
    () => {
        "\u{20}\u{A0}\u{1680}\u{2000}-\u{200A}\u{2028}\u{2029}\u{202F}\u{205F}\u{3000}"
    };
}

/// The characters [`deceptive`] names, as the inside of a character class of literal
/// characters (a test holds the two together).
macro_rules! deceptive_chars {
    () => {
        concat!(
            controls!(),
            "\u{AD}\u{34F}\u{61C}\u{115F}\u{1160}\u{180E}\u{200B}\u{200E}\u{200F}",
            "\u{2028}-\u{202E}\u{2060}-\u{2064}\u{2066}-\u{206F}\u{3164}\u{FEFF}\u{FFA0}",
            "\u{FFF9}-\u{FFFB}\u{E0000}-\u{E007F}",
        )
    };
}

/// The controls a template's body may not hold: all but tab, line feed and carriage return.
macro_rules! stray_controls {
    () => {
        "\u{0}-\u{8}\u{B}\u{C}\u{E}-\u{1F}\u{7F}-\u{9F}"
    };
}

/// The most characters a template's subject has (API.md §8).
pub const TEMPLATE_SUBJECT_MAX: usize = 200;
/// The most bytes a template's text, HTML or text message has (API.md §8): as many
/// characters at the most, which is what the published length counts.
pub const TEMPLATE_BODY_MAX: usize = 64 * 1024;

/// A template's subject as written (API.md §8): one line (no control character, nor
/// Unicode's line and paragraph separators), not blank, and nothing that shows otherwise than
/// it is in the person's mail client ([`deceptive`]: a right-to-left override, a zero width).
/// Whether it compiles, and how it renders, is the lint's (`messages::lint`).
pub static TEMPLATE_SUBJECT: Grammar = Grammar::new(
    concat!(
        "^[^",
        deceptive_chars!(),
        "]*[^",
        deceptive_chars!(),
        spaces!(),
        "][^",
        deceptive_chars!(),
        "]*$"
    ),
    1,
    TEMPLATE_SUBJECT_MAX,
);

/// A template's text, HTML or text message as written (API.md §8): not blank, and no
/// control character but tab and line breaks.
pub static TEMPLATE_BODY: Grammar = Grammar::new(
    concat!(
        "^[^",
        stray_controls!(),
        "]*[^",
        controls!(),
        spaces!(),
        "][^",
        stray_controls!(),
        "]*$"
    ),
    1,
    TEMPLATE_BODY_MAX,
);

/// A test recipient's `match` (API.md §13.2): an address, a number or a pattern with `*`,
/// with no control character or white space; which of them, the parser says.
pub static RECIPIENT_PATTERN: Grammar =
    Grammar::new(concat!("^[^", controls!(), spaces!(), "]+$"), 1, 254);

/// A tenant's name: 1 to 100 characters, none of [`name_refused`]'s, not only spaces (the
/// parser trims the spaces around it).
pub static TENANT_NAME: Grammar = Grammar::new(
    concat!(
        "^[^",
        name_refused!(),
        "]*[^ ",
        name_refused!(),
        // the one character that shows is not a combining mark alone (it needs a base)
        "\u{300}-\u{36F}\u{1AB0}-\u{1AFF}\u{1DC0}-\u{1DFF}\u{20D0}-\u{20FF}\u{FE20}-\u{FE2F}",
        "][^",
        name_refused!(),
        "]*$"
    ),
    1,
    100,
);

/// A character that makes text show otherwise than it is: a control, one that shows as
/// nothing where it stands (zero width space, soft hyphen, word joiner and the invisible
/// operators, a BOM, a Hangul filler, tags) or reorders what follows (the bidirectional
/// controls). Narrower than a tenant name's refusals: the joiners (ZWNJ, which Persian
/// spelling needs; ZWJ, which emoji sequences need), variation selectors (`❤️`) and the
/// no-break and thin spaces (French typography) are text. For a sender's display name and
/// a return URL.
pub fn deceptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{AD}'
                | '\u{34F}'
                | '\u{61C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180E}'
                | '\u{200B}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// A dotted IPv4 address, as a pattern's text.
macro_rules! v4 {
    () => {
        "((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    };
}

/// An IPv6 address in its RFC 4291 text forms (no zone, no brackets), as a pattern's text:
/// alternatives, to be grouped by the pattern using it.
macro_rules! v6 {
    () => {
        concat!(
            "([0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}",
            "|([0-9A-Fa-f]{1,4}:){1,7}:",
            "|([0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}",
            "|([0-9A-Fa-f]{1,4}:){1,5}(:[0-9A-Fa-f]{1,4}){1,2}",
            "|([0-9A-Fa-f]{1,4}:){1,4}(:[0-9A-Fa-f]{1,4}){1,3}",
            "|([0-9A-Fa-f]{1,4}:){1,3}(:[0-9A-Fa-f]{1,4}){1,4}",
            "|([0-9A-Fa-f]{1,4}:){1,2}(:[0-9A-Fa-f]{1,4}){1,5}",
            "|[0-9A-Fa-f]{1,4}:(:[0-9A-Fa-f]{1,4}){1,6}",
            "|:((:[0-9A-Fa-f]{1,4}){1,7}|:)",
            // … and with an embedded IPv4 address in the last 32 bits (`::ffff:127.0.0.1`),
            // which the address policy then judges (422), like any other spelling
            "|([0-9A-Fa-f]{1,4}:){6}",
            v4!(),
            "|::([0-9A-Fa-f]{1,4}:){0,5}",
            v4!(),
            "|[0-9A-Fa-f]{1,4}::([0-9A-Fa-f]{1,4}:){0,4}",
            v4!(),
            "|([0-9A-Fa-f]{1,4}:){1}[0-9A-Fa-f]{1,4}::([0-9A-Fa-f]{1,4}:){0,3}",
            v4!(),
            "|([0-9A-Fa-f]{1,4}:){2}[0-9A-Fa-f]{1,4}::([0-9A-Fa-f]{1,4}:){0,2}",
            v4!(),
            "|([0-9A-Fa-f]{1,4}:){3}[0-9A-Fa-f]{1,4}::([0-9A-Fa-f]{1,4}:){0,1}",
            v4!(),
            "|([0-9A-Fa-f]{1,4}:){4}[0-9A-Fa-f]{1,4}::",
            v4!(),
        )
    };
}

/// A webhook or HTTP-transport endpoint: `http(s)://`, a host (a DNS name whose last label
/// starts with a letter; `_` allowed, as container names have it), a dotted IPv4 address or a
/// bracketed IPv6 address), an optional
/// port, a path and a query of URL characters, no user info, no fragment. Whether `http://`
/// and the host's address are allowed is the address policy's business (422), not form.
pub static ENDPOINT_URL: Grammar = Grammar::new(
    concat!(
        // the scheme in any case (RFC 3986 §3.1: `HTTPS://` is `https://`)
        "^[Hh][Tt][Tt][Pp][Ss]?://(",
        // a DNS name
        "([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\\.)*[A-Za-z]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?",
        // IPv4
        "|", v4!(),
        // IPv6 (RFC 4291 text forms, without a zone)
        "|\\[(", v6!(), ")\\]",
        ")",
        // a port of 1 to 65535
        "(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?",
        // path and query
        "(/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*(\\?[A-Za-z0-9._~!$&'()*+,;=:@%/?\\[\\]|{}^-]*)?$",
    ),
    8,
    2048,
);

/// A relay's host as given (API.md §6.2): a host name, or an IP address in any spelling —
/// which address it stands for is the host policy's to judge (422) — but never a URL,
/// `host:port`, a path, a query or user info (400). An IPv6 address may be bracketed and
/// carry a zone; an IPv4 one may be bracketed as SMTP's address literal (`[192.0.2.1]`).
pub static SMTP_HOST: Grammar = Grammar::new(
    concat!(
        "^(",
        // a name (or an IPv4 address in any of its spellings): no white space (U+FEFF named,
        // as only ECMA-262's `\\s` holds it), control, `/`, `@`, `?`, `#`, `:`, bracket or
        // `%`, and not starting with a dot
        "[^\\s\\uFEFF\\x00-\\x1f\\x7f-\\x9f/@?#:\\[\\]%.][^\\s\\uFEFF\\x00-\\x1f\\x7f-\\x9f/@?#:\\[\\]%]*",
        // an IPv6 address, bare or bracketed, maybe with a zone
        "|(", v6!(), ")(%[0-9A-Za-z._~-]+)?",
        "|\\[(", v6!(), ")(%[0-9A-Za-z._~-]+)?\\]",
        // an IPv4 address literal, as SMTP writes one (`[192.0.2.1]`): dotted decimal octets
        // without leading zeros, as the address parser takes them
        "|\\[((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\]",
        ")$"
    ),
    1,
    253,
);

/// Every grammar, for the description and its test.
pub fn all() -> [(&'static str, &'static Grammar); 16] {
    [
        ("template_subject", &TEMPLATE_SUBJECT),
        ("template_body", &TEMPLATE_BODY),
        ("recipient_pattern", &RECIPIENT_PATTERN),
        ("locale", &LOCALE),
        ("purpose", &PURPOSE),
        ("phone", &PHONE),
        ("dns_name", &DNS_NAME),
        ("dkim_selector", &DKIM_SELECTOR),
        ("code_challenge", &CODE_CHALLENGE),
        ("code_verifier", &CODE_VERIFIER),
        ("brand_color", &BRAND_COLOR),
        ("idempotency_key", &IDEMPOTENCY_KEY),
        ("cursor", &CURSOR),
        ("tenant_name", &TENANT_NAME),
        ("endpoint_url", &ENDPOINT_URL),
        ("smtp_host", &SMTP_HOST),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_name_refuses_every_control_format_and_separator_character() {
        // Unicode's own categories (the regex crate's tables), character by character: every
        // control (Cc), format character (Cf) and separator (Z*) other than the plain space.
        let invisible = Regex::new(r"^[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Zs}]$").unwrap();
        let mut allowed = Vec::new();
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let s = c.to_string();
            if c != ' ' && invisible.is_match(&s) && TENANT_NAME.matches(&format!("a{s}b")) {
                allowed.push(format!("U+{:04X}", u32::from(c)));
            }
        }
        assert!(allowed.is_empty(), "allowed in a name: {allowed:?}");
    }

    #[test]
    fn the_published_class_of_deceptive_characters_is_the_function() {
        let class = Regex::new(concat!("^[", deceptive_chars!(), "]$")).unwrap();
        let differ: Vec<String> = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| class.is_match(&c.to_string()) != deceptive(c))
            .map(|c| format!("U+{:04X}", u32::from(c)))
            .collect();
        assert!(differ.is_empty(), "{differ:?}");
    }

    #[test]
    fn an_endpoints_ipv6_form_is_what_an_ipv6_parser_takes() {
        // Every count of groups before and after `::` (or none), with and without an
        // embedded IPv4 address: the pattern agrees with the standard library's parser.
        let groups = |n: usize| vec!["a1"; n].join(":");
        let mut forms = Vec::new();
        for left in 0..=8 {
            for right in 0..=8 {
                for tail in ["", "1.2.3.4"] {
                    let join = |a: String, b: &str| match (a.is_empty(), b.is_empty()) {
                        (true, _) => b.to_string(),
                        (_, true) => a,
                        _ => format!("{a}:{b}"),
                    };
                    let r = join(groups(right), tail);
                    forms.push(format!("{}::{r}", groups(left)));
                    if right == 0 {
                        forms.push(join(groups(left), tail));
                    }
                }
            }
        }
        for f in forms {
            let parsed = f.parse::<std::net::Ipv6Addr>().is_ok();
            let url = format!("https://[{f}]/x");
            assert_eq!(ENDPOINT_URL.matches(&url), parsed, "{url}");
        }
    }

    #[test]
    fn every_pattern_compiles_and_takes_its_examples() {
        for (name, g) in all() {
            assert!(Regex::new(g.pattern).is_ok(), "{name}");
        }
        for (g, yes, no) in [
            (
                &LOCALE,
                &["en", "pt-BR", "zh-Hant-TW", "1en", "en-toolongsub"][..],
                &["e", "en_US", "en-", "-en", "en--x"][..],
            ),
            (&PURPOSE, &["login", "a.b-c_1"], &["", "Login", "a b"]),
            (
                &PHONE,
                &["+4915112345678", "+12345678"],
                &[
                    "+0123456789",
                    "+1234567",
                    "4915112345678",
                    "+1234567890123456",
                ],
            ),
            (
                &DNS_NAME,
                &["acme.example", "mail.acme.example."],
                &[
                    "acme",
                    "-a.example",
                    "a..example",
                    " acme.example",
                    "127.0.0.1",
                    "a.1b",
                ],
            ),
            (
                &DKIM_SELECTOR,
                &["otpmint1", "s1.2026"],
                &["", "-s", "s-", "a..b"],
            ),
            (
                &CODE_CHALLENGE,
                &["E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"],
                &["E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN", "short"],
            ),
            (
                &CODE_VERIFIER,
                &["dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"],
                &["short", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjX!"],
            ),
            (
                &BRAND_COLOR,
                &["#FFD700", "#0a0b0c"],
                &["FFD700", "#FFD70", "#GGGGGG", "red"],
            ),
            (
                &IDEMPOTENCY_KEY,
                &["a", "order-42/retry:1"],
                &["", "has space", "tab\t", "é"],
            ),
            (&CURSOR, &["", "bm9wZQ", "a-b_c"], &["a=b", "a b", "a/b"]),
            (
                &TEMPLATE_SUBJECT,
                &["Code", " Your code ", "Ihr Code ✓"][..],
                &[
                    "a\u{202E}b",
                    "",
                    "a\u{200B}b",
                    " ",
                    "\u{7}",
                    "\u{3000}",
                    "a\u{2028}b",
                    "a\nb",
                    "a\tb",
                ][..],
            ),
            (
                &TEMPLATE_BODY,
                &["{{ code }}", "Hi\r\n\t{{ code }}\n"][..],
                &["", " \n\t", "\u{1}{{ code }}", "{{ code }}\u{1B}"][..],
            ),
            (
                &RECIPIENT_PATTERN,
                &["ada@example.com", "*@test.example", "+1555*"][..],
                &["", " ada@example.com", "a\u{A0}b", "ada@example.com\n"][..],
            ),
            (
                &SMTP_HOST,
                &[
                    "smtp.acme.example",
                    "Mail.Example.COM.",
                    "localhost",
                    "127.0.0.1",
                    "0x7f000001",
                    "2130706433",
                    "127.1",
                    "::1",
                    "[::1]",
                    "::ffff:127.0.0.1",
                    "fe80::1%eth0",
                    "bücher.example",
                    "１２７.0.0.1",
                    "[192.0.2.1]",
                    "[255.255.255.255]",
                ][..],
                &[
                    "",
                    ".",
                    ".acme.example",
                    "a b",
                    "a\tb",
                    "smtp://localhost",
                    "8.8.8.8:587",
                    "[8.8.8.8]:587",
                    "[1.2.3]",
                    "[01.2.3.4]",
                    "[999.1.1.1]",
                    "[256.0.0.0]",
                    "[1.2.3.4]x",
                    "smtp.acme.example:587",
                    "localhost/x",
                    "user@8.8.8.8",
                    "host?x",
                    "host#x",
                    "a%b",
                    "a\u{feff}b",
                    "[::1",
                    "::1]",
                    "a:b:c",
                    "1.2.3.4:5:6",
                ][..],
            ),
            (
                &TENANT_NAME,
                &["Acme", "  Acme Corp  ", "Ünïcødé 🚀 株式会社", "a b", "x"],
                &[
                    "",
                    "   ",
                    "Acme\nCorp",
                    "\tAcme",
                    "Acme\u{202E}moc",
                    "A\u{200B}cme",
                    "Acme\u{E0041}",
                    "Acme\u{FE0F}",
                    "A\u{3164}",
                    "A\u{00A0}B",
                    "\u{2800}\u{2800}",
                    "Ac\u{2800}me",
                    "A\u{1D159}",
                    "A\u{FFFC}",
                    "A\u{FFF0}",
                    "A\u{E0080}",
                    "A\u{E0FFF}",
                ],
            ),
            (
                &ENDPOINT_URL,
                &[
                    "https://hooks.example.com/otp",
                    "https://example.com",
                    "http://localhost:8080/h?x=1&y=/2",
                    "https://8.8.8.8:443/",
                    "https://[2001:db8::1]/x",
                    "https://[::1]:9000",
                    "https://[::ffff:127.0.0.1]/x",
                    "https://[64:ff9b::10.0.0.1]:8443/",
                    "https://[1:2:3:4:5:6:1.2.3.4]/",
                    "https://[1::2:3:4:5:1.2.3.4]/",
                    "http://mail_mock:8080/v1",
                    "https://hooks.example.com/h?a=b|c&f[x]=1&q={}^",
                    "HTTPS://Hooks.Example.com/h",
                ],
                &[
                    "ftp://example.com/",
                    "https://user@example.com/",
                    "https://example.com/#frag",
                    "https://example.1a/",
                    "https://256.1.1.1/",
                    "https://1.2.3/",
                    "https://[1:::2]/",
                    "https://[1:2:3:4:5:6:7:1.2.3.4]/",
                    "https://[1::2:3:4:5:6:1.2.3.4]/",
                    "https://[::ffff:1.2.3]/",
                    "https://example.com:0/",
                    "https://example.com:65536/",
                    "https://exa mple.com/",
                ],
            ),
        ] {
            for y in yes {
                assert!(g.matches(y), "{} refuses {y}", g.pattern);
            }
            for n in no {
                assert!(!g.matches(n), "{} takes {n}", g.pattern);
            }
        }
    }
}
