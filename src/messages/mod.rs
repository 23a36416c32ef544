//! Messages (API.md §8): a tenant's templates per locale and the built-in ones, rendered
//! with MiniJinja in a sandbox — no loader (so no include, import or extends: those tags are
//! not even compiled in), no macros, strict undefined, HTML auto-escaped in `html`, and a
//! fuel budget so a template cannot burn CPU or memory — and the lint that runs on save.

mod builtin;
mod escape;
mod lint;
mod locales;
mod visible;

pub use builtin::LANGUAGES;
pub use escape::lone_cr_as_line_break;
pub use lint::{lint, lint_for};
pub use locales::{chain, resolve, Source};

use std::collections::BTreeMap;
use std::sync::LazyLock;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::domain::template::TenantTemplate;
use crate::domain::Millis;
use escape::html_escaped;
use visible::html_shows_code;

/// The variables a template may use.
pub const VARIABLES: [&str; 9] = [
    "code",
    "ttl_seconds",
    "ttl_minutes",
    "expires_at",
    "app_name",
    "purpose",
    "email",
    "locale",
    "link",
];
/// Names the engine itself provides (functions and loop state).
const ENGINE_NAMES: [&str; 4] = ["range", "dict", "namespace", "loop"];

pub const SUBJECT_MAX_CHARS: usize = crate::domain::grammar::TEMPLATE_SUBJECT_MAX;
/// A text message, rendered, is at most this many characters (API.md §12.3).
pub const SMS_MAX_CHARS: usize = 320;
pub const BODY_MAX_BYTES: usize = crate::domain::grammar::TEMPLATE_BODY_MAX;
/// A rendered part larger than this is refused (a loop cannot inflate a message).
const RENDERED_MAX_BYTES: usize = 256 * 1024;
/// About this many engine instructions per render (MiniJinja's fuel): plenty for any message,
/// far too little for a loop that tries to burn a worker.
const FUEL: u64 = 100_000;
/// The code previews are rendered with.
pub const PREVIEW_CODE: &str = "123456";
/// The number a preview's text message is rendered to (`{{ email }}` in `sms`): a fictional
/// one (+1 555 01xx).
pub const PREVIEW_PHONE: &str = "+15550100199";

/// One refusal of a template field: which field, where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub field: &'static str,
    pub line: Option<usize>,
    pub message: String,
}

impl TemplateError {
    fn new(field: &'static str, line: Option<usize>, message: impl Into<String>) -> Self {
        TemplateError {
            field,
            line,
            message: message.into(),
        }
    }
}

/// A template's sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// The text message of this locale (API.md §12.3).
    pub sms: Option<String>,
}

impl From<&TenantTemplate> for Fields {
    fn from(t: &TenantTemplate) -> Self {
        Fields {
            subject: t.subject.clone(),
            text: t.text.clone(),
            html: t.html.clone(),
            sms: t.sms.clone(),
        }
    }
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject, made one line.
    pub subject: String,
    /// Whether the subject rendered a line break, a control, an invisible or a
    /// bidirectional-control character: a branch the lint's sample did not take (a send
    /// uses the built-in template instead).
    pub subject_broken: bool,
    pub text: String,
    pub html: Option<String>,
    /// The text message, when the template has one.
    pub sms: Option<String>,
}

/// What a template is rendered with.
#[derive(Debug, Clone)]
pub struct Vars<'a> {
    pub code: &'a str,
    pub ttl_seconds: u32,
    pub expires_at: Millis,
    pub app_name: &'a str,
    pub purpose: &'a str,
    pub email: &'a str,
    pub locale: &'a str,
    /// The magic link of the code (API.md §14.2), or empty.
    pub link: &'a str,
}

impl Vars<'_> {
    fn context(&self) -> Value {
        let expires = chrono::DateTime::from_timestamp_millis(self.expires_at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        let mut m = BTreeMap::new();
        m.insert("code", Value::from(self.code));
        m.insert("ttl_seconds", Value::from(self.ttl_seconds));
        m.insert("ttl_minutes", Value::from(self.ttl_seconds.div_ceil(60)));
        m.insert("expires_at", Value::from(expires));
        m.insert("app_name", Value::from(self.app_name));
        m.insert("purpose", Value::from(self.purpose));
        m.insert("email", Value::from(self.email));
        m.insert("locale", Value::from(self.locale));
        m.insert("link", Value::from(self.link));
        Value::from(m)
    }
}

const FIELD_NAMES: [&str; 4] = ["subject", "text", "html", "sms"];

fn field_of(name: &str) -> &'static str {
    let last = name.rsplit('/').next().unwrap_or(name);
    FIELD_NAMES
        .into_iter()
        .find(|f| *f == last)
        .unwrap_or("text")
}

fn sandbox<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_auto_escape_callback(|name| {
        if field_of(name) == "html" {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(|out, state, value| match value.as_str() {
        Some(s) if *state.auto_escape() == AutoEscape::Html && !value.is_safe() => out
            .write_str(&html_escaped(s))
            .map_err(minijinja::Error::from),
        _ => minijinja::escape_formatter(out, state, value),
    });
    env
}

fn engine_error(field: &'static str, e: &minijinja::Error) -> TemplateError {
    let message = match e.kind() {
        minijinja::ErrorKind::OutOfFuel => "takes too much work to render".to_string(),
        _ => match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        },
    };
    TemplateError::new(field, e.line(), message)
}

/// The first line that names `word` as a whole word (for an unknown variable's error).
fn line_of(source: &str, word: &str) -> Option<usize> {
    source
        .lines()
        .position(|l| {
            l.match_indices(word).any(|(i, _)| {
                let before = l[..i].chars().next_back();
                let after = l[i + word.len()..].chars().next();
                let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !ident(before) && !ident(after)
            })
        })
        .map(|i| i + 1)
}

/// `code` appears in `out` as one whole run of digits.
fn holds_code(out: &str, code: &str) -> bool {
    out.match_indices(code).any(|(i, _)| {
        let before = out[..i].chars().next_back();
        let after = out[i + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// Whether a rendered message shows the code as one run of digits, in its text and in its
/// HTML when it has one (a tenant template that hides it for some recipient or purpose is
/// not used; API.md §6.29).
pub fn shows_code(r: &Rendered, code: &str) -> bool {
    holds_code(&r.text, code) && r.html.as_deref().is_none_or(|h| html_shows_code(h, code))
}

/// Whether a rendered email's subject is one line no longer than a subject may be. A
/// subject is a header line (at most 998 bytes, RFC 5322, and relays refuse longer ones): a
/// tenant's that renders longer for a message's values (a long name or address, repeated),
/// or renders a line break (API.md §8), is not used, the built-in one is (a text message
/// has no subject: it is not asked).
pub fn subject_fits(r: &Rendered) -> bool {
    !r.subject_broken && r.subject.chars().count() <= SUBJECT_MAX_CHARS
}

/// A magic link the template did not place goes at the end of the message: a paragraph of
/// its own in the text, and a link in the HTML.
pub fn ensure_link(r: &mut Rendered, link: &str) {
    if !r.text.contains(link) {
        r.text = format!("{}\n\n{link}\n", r.text.trim_end());
    }
    if let Some(h) = &mut r.html {
        // A template that wrote `{{ link|e }}` has it with `/` as `&#x2f;` (MiniJinja's own
        // escape filter); the HTML's escaping leaves `/` as it is.
        if !h.contains(link) && !h.contains(&link.replace('/', "&#x2f;")) {
            // The link is ours (base URL and a base62 token): nothing in it needs escaping
            // but the quote, and it has none.
            let a = format!("<p><a href=\"{link}\">{link}</a></p>");
            match body_end(h) {
                Some(i) => h.insert_str(i, &a),
                None => h.push_str(&a),
            }
        }
    }
}

/// Where the last `</body>` end tag starts, in whatever case it is written, and however
/// its name ends as HTML reads a tag name — at white space, `/` or `>` (`</body >`,
/// `</body/>`; not `</bodyx>`): ASCII case, so the lowered copy's offsets are the HTML's.
fn body_end(h: &str) -> Option<usize> {
    let lower = h.to_ascii_lowercase();
    let mut end = lower.len();
    while let Some(i) = lower[..end].rfind("</body") {
        let next = lower.as_bytes().get(i + "</body".len());
        if next.is_some_and(|b| b.is_ascii_whitespace() || *b == b'/' || *b == b'>') {
            return Some(i);
        }
        end = i;
    }
    None
}

/// Whether a rendered message has a text message that shows the code.
pub fn sms_shows_code(r: &Rendered, code: &str) -> bool {
    r.sms.as_deref().is_some_and(|s| holds_code(s, code))
}

/// What a locale of a set holds besides subject and text.
#[derive(Debug, Clone, Copy, Default)]
struct Parts {
    html: bool,
    sms: bool,
}

/// A set of templates by locale, compiled once.
pub struct TemplateSet {
    env: Environment<'static>,
    locales: BTreeMap<String, Parts>,
    /// The bytes of the sources compiled (what a cache of sets counts).
    bytes: usize,
}

impl TemplateSet {
    /// The tenant's stored templates. One that no longer compiles (it was linted when it was
    /// saved, so only an engine upgrade could cause that) is left out: the built-in applies.
    pub fn new(rows: &[TenantTemplate]) -> TemplateSet {
        let mut set = TemplateSet {
            env: sandbox(),
            locales: BTreeMap::new(),
            bytes: 0,
        };
        for t in rows {
            set.add(&t.locale, Fields::from(t));
        }
        set
    }

    /// The bytes of the sources this set compiled.
    pub fn source_bytes(&self) -> usize {
        self.bytes
    }

    fn add(&mut self, locale: &str, f: Fields) -> bool {
        let bytes = f.subject.len()
            + f.text.len()
            + f.html.as_ref().map_or(0, String::len)
            + f.sms.as_ref().map_or(0, String::len);
        let mut names = vec![
            (format!("{locale}/subject"), f.subject),
            (format!("{locale}/text"), f.text),
        ];
        let parts = Parts {
            html: f.html.is_some(),
            sms: f.sms.is_some(),
        };
        if let Some(h) = f.html {
            names.push((format!("{locale}/html"), h));
        }
        if let Some(t) = f.sms {
            names.push((format!("{locale}/sms"), t));
        }
        let mut env = std::mem::replace(&mut self.env, sandbox());
        let ok = names
            .into_iter()
            .all(|(n, s)| env.add_template_owned(n, s).is_ok());
        if ok {
            self.locales.insert(locale.to_string(), parts);
            self.bytes += bytes;
        } else {
            for f in FIELD_NAMES {
                env.remove_template(&format!("{locale}/{f}"));
            }
        }
        self.env = env;
        ok
    }

    /// The built-in templates.
    pub fn builtins() -> &'static TemplateSet {
        static SET: LazyLock<TemplateSet> = LazyLock::new(|| {
            let mut set = TemplateSet {
                env: sandbox(),
                locales: BTreeMap::new(),
                bytes: 0,
            };
            for (lang, f) in builtin::all() {
                set.add(lang, f);
            }
            set
        });
        &SET
    }

    pub fn has(&self, locale: &str) -> bool {
        self.locales.contains_key(locale)
    }

    pub fn locales(&self) -> impl Iterator<Item = &str> {
        self.locales.keys().map(String::as_str)
    }

    /// Render the template of `locale` (which must be in the set).
    pub fn render(&self, locale: &str, vars: &Vars<'_>) -> Result<Rendered, TemplateError> {
        let ctx = vars.context();
        let part = |field: &'static str| self.part(locale, field, &ctx);
        let raw = part("subject")?;
        let subject = one_line(&raw);
        // A lone CR as the line break it means, for every way a message goes (a relay, a
        // provider's API, the HTTP transport, the test inbox, a preview).
        let text = lone_cr_as_line_break(&part("text")?).into_owned();
        let parts = self.locales.get(locale).copied().unwrap_or_default();
        let html = parts
            .html
            .then(|| part("html").map(|h| lone_cr_as_line_break(&h).into_owned()))
            .transpose()?;
        Ok(Rendered {
            subject,
            // Controls and Unicode's line and paragraph separators among them.
            subject_broken: raw.chars().any(crate::domain::grammar::deceptive),
            text,
            html,
            // A text message that fails does not take the email down with it: it is then
            // absent (the built-in one stands in when a text message is sent).
            sms: self.render_sms(locale, vars).ok().flatten(),
        })
    }

    /// Whether the template of `locale` has a text message.
    pub fn has_sms(&self, locale: &str) -> bool {
        self.locales.get(locale).is_some_and(|p| p.sms)
    }

    /// One field of `locale`'s template rendered as it is (a subject not yet made one line).
    fn part(
        &self,
        locale: &str,
        field: &'static str,
        ctx: &Value,
    ) -> Result<String, TemplateError> {
        let t = self
            .env
            .get_template(&format!("{locale}/{field}"))
            .map_err(|e| engine_error(field, &e))?;
        let out = t.render(ctx).map_err(|e| engine_error(field, &e))?;
        if out.len() > RENDERED_MAX_BYTES {
            return Err(TemplateError::new(
                field,
                None,
                "renders too large a message",
            ));
        }
        Ok(out)
    }

    /// The subject of `locale` as rendered, before it is made one line.
    pub(super) fn raw_subject(
        &self,
        locale: &str,
        vars: &Vars<'_>,
    ) -> Result<String, TemplateError> {
        self.part(locale, "subject", &vars.context())
    }

    /// Whether the text message of `locale` renders, for these values, longer than
    /// `SMS_MAX_CHARS` (why a send falls back to the built-in one, said in the log).
    pub fn sms_over_limit(&self, locale: &str, vars: &Vars<'_>) -> bool {
        self.has_sms(locale)
            && self
                .env
                .get_template(&format!("{locale}/sms"))
                .and_then(|t| t.render(vars.context()))
                .is_ok_and(|sms| sms.trim().chars().count() > SMS_MAX_CHARS)
    }

    /// The text message of `locale`, if its template has one: at most `SMS_MAX_CHARS`.
    pub fn render_sms(
        &self,
        locale: &str,
        vars: &Vars<'_>,
    ) -> Result<Option<String>, TemplateError> {
        if !self.has_sms(locale) {
            return Ok(None);
        }
        let t = self
            .env
            .get_template(&format!("{locale}/sms"))
            .map_err(|e| engine_error("sms", &e))?;
        let sms = t
            .render(vars.context())
            .map_err(|e| engine_error("sms", &e))?
            .trim()
            .to_string();
        if sms.chars().count() > SMS_MAX_CHARS {
            return Err(TemplateError::new(
                "sms",
                None,
                format!("renders more than {SMS_MAX_CHARS} characters"),
            ));
        }
        Ok(Some(sms))
    }
}

/// A subject as one header line: line breaks and tabs become spaces, runs collapse, other
/// control characters (NUL, ESC) go.
fn one_line(s: &str) -> String {
    s.split_whitespace()
        .map(|w| w.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Render fields that are not stored (a preview). Unlike a send, where a template that
/// fails for its values leaves the built-in one to stand in, a preview names what is wrong,
/// by the lint's own rules ([`lint::checked_render`]): a branch that leaves out the code or
/// renders a line break in the subject for this `purpose`, a text message over
/// `SMS_MAX_CHARS` for these values (a long purpose, say).
pub fn render_once(f: &Fields, vars: &Vars<'_>) -> Result<Rendered, Vec<TemplateError>> {
    let mut set = TemplateSet {
        env: sandbox(),
        locales: BTreeMap::new(),
        bytes: 0,
    };
    set.add("preview", f.clone());
    let mut rendered = match lint::checked_render(&set, "preview", vars) {
        (Some(r), errors) if errors.is_empty() => r,
        (_, errors) => return Err(errors),
    };
    // A text message goes to a number: there `{{ email }}` is one (its error, if it has
    // one, is the answer).
    let to_a_phone = Vars {
        email: PREVIEW_PHONE,
        ..*vars
    };
    rendered.sms = set
        .render_sms("preview", &to_a_phone)
        .map_err(|e| vec![e])?;
    if rendered
        .sms
        .as_deref()
        .is_some_and(|t| !holds_code(t, vars.code))
    {
        return Err(vec![TemplateError::new("sms", None, lint::CODE_MISSING)]);
    }
    Ok(rendered)
}

/// The built-in sources of a language, if there is one.
pub fn builtin_fields(locale: &str) -> Option<Fields> {
    builtin::all()
        .into_iter()
        .find(|(l, _)| *l == locale)
        .map(|(_, f)| f)
}

#[cfg(test)]
mod escape_tests;
#[cfg(test)]
mod tests;
