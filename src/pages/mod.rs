//! The pages people see (API.md §14): server-rendered HTML from `templates/pages/`, no
//! JavaScript, no third-party resources, in the language of the code's message (the ten
//! built-in languages, else English). Rendered with MiniJinja, HTML auto-escaped.

mod languages;
mod strings;

use std::sync::LazyLock;

use minijinja::{context, AutoEscape, Environment};

pub use strings::PageStrings;

/// The stylesheet every page links to (served by otpmint itself).
pub const STYLE_CSS: &str = include_str!("../../templates/pages/style.css");

/// The pages' icon (served by otpmint itself): a browser asks for one, and without it asks
/// `/favicon.ico` of the host, which otpmint does not have.
pub const ICON_SVG: &str = include_str!("../../templates/pages/icon.svg");

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // A built-in page that does not compile is a build defect, caught by the tests.
    let _ = env.add_template("page.html", include_str!("../../templates/pages/page.html"));
    let _ = env.add_template(
        "hosted.html",
        include_str!("../../templates/pages/hosted.html"),
    );
    env
});

/// What a page shows.
pub struct Page<'a> {
    pub lang: &'a str,
    pub title: &'a str,
    /// The app the page is for, after the title in the browser's tab (`Confirm · Acme`).
    pub app_name: Option<&'a str>,
    pub lead: &'a str,
    /// With a form: its button, action and CSRF token.
    pub form: Option<Form<'a>>,
    /// The path prefix of `server.public_url` (`""` or `/otp`), for the stylesheet.
    pub base_path: &'a str,
    /// The tenant whose colour the page wears (its brand stylesheet), if it has one.
    pub brand: Option<&'a str>,
    /// The tenant whose logo the page shows, and its name (the logo's text), if it has one.
    pub logo: Option<(&'a str, &'a str)>,
    /// A link (its address and words) to where the person goes on, below the text.
    pub link: Option<(&'a str, &'a str)>,
}

pub struct Form<'a> {
    pub button: &'a str,
    pub action: &'a str,
    pub csrf: &'a str,
}

/// The page's HTML.
pub fn render(p: &Page<'_>) -> String {
    let (button, action, csrf) = match &p.form {
        Some(f) => (f.button, f.action, f.csrf),
        None => ("", "", ""),
    };
    ENV.get_template("page.html")
        .and_then(|t| {
            t.render(context! {
                lang => html_lang(p.lang),
                title => p.title,
                app_name => p.app_name,
                lead => p.lead,
                form => p.form.is_some(),
                button => button,
                action => action,
                csrf => csrf,
                base_path => p.base_path,
                brand => p.brand,
                logo => p.logo.map(|(tenant, _)| tenant),
                app => p.logo.map(|(_, app)| app),
                link => p.link.map(|(href, _)| href),
                link_text => p.link.map(|(_, text)| text),
            })
        })
        .unwrap_or_else(|_| "<!doctype html><title>otpmint</title>".to_string())
}

/// A hosted sign-in page (API.md §14.1).
pub struct HostedPage<'a> {
    pub lang: &'a str,
    pub app: &'a str,
    pub tenant: &'a str,
    pub title: &'a str,
    /// Whether `title` names the app already (else it follows the title).
    pub names_app: bool,
    pub lead: &'a str,
    pub error: &'a str,
    /// `email`, `code`, or empty for a page without a form.
    pub field: &'a str,
    pub label: &'a str,
    pub value: &'a str,
    /// Whether the error is about what the field holds (`aria-invalid`): not a wait, a
    /// send that failed, or a code that ended.
    pub invalid: bool,
    /// Whether the focus goes to the second form's button ("send a new code"), the action
    /// the error asks for, instead of the field.
    pub focus_again: bool,
    pub button: &'a str,
    pub action: &'a str,
    pub csrf: &'a str,
    /// The attempts the code had used when this page was made, sent back with the code's
    /// form: a form posted again after it was answered (a reload, a second click) is known.
    pub seen: u32,
    /// What the session had sent when this page was made (`SessionRow::sent_mark`), sent
    /// back with the forms that send one: a send posted again after it was answered (a
    /// double click) is known.
    pub sent: &'a str,
    /// A second form ("send a new code"), when not empty.
    pub again: &'a str,
    pub again_action: &'a str,
    /// A remark under the form (no new code can be sent), when not empty.
    pub note: &'a str,
    /// The ids of the texts that describe the field (`aria-describedby`), space-separated.
    pub described: &'a str,
    /// A link back to the tenant's app (a sign-in that can no longer be completed), when
    /// `back_url` is not empty.
    pub back: &'a str,
    pub back_url: &'a str,
    pub brand: bool,
    pub logo: bool,
    pub base_path: &'a str,
}

pub fn render_hosted(p: &HostedPage<'_>) -> String {
    ENV.get_template("hosted.html")
        .and_then(|t| {
            t.render(context! {
                lang => html_lang(p.lang), app => p.app, tenant => p.tenant, title => p.title,
                names_app => p.names_app,
                lead => p.lead, error => p.error, field => p.field, label => p.label,
                value => p.value, invalid => p.invalid, focus_again => p.focus_again, button => p.button, action => p.action, csrf => p.csrf, seen => p.seen, sent => p.sent,
                again => p.again, again_action => p.again_action, note => p.note, described => p.described, back => p.back,
                back_url => p.back_url, brand => p.brand,
                logo => p.logo, base_path => p.base_path,
            })
        })
        .unwrap_or_else(|_| "<!doctype html><title>otpmint</title>".to_string())
}

/// A page's `lang` attribute for the language of its words: the Chinese pages are written
/// in Simplified characters, which `zh-Hans` tells browsers and screen readers (their fonts
/// and voices), whatever Chinese the person asked for.
fn html_lang(lang: &str) -> &str {
    if lang == "zh" {
        "zh-Hans"
    } else {
        lang
    }
}

/// A tenant's colour as a stylesheet, with a text colour that keeps the contrast.
pub fn brand_css(color: &str) -> String {
    let hex = color.trim_start_matches('#');
    let c = |i: usize| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("00"), 16).unwrap_or(0);
    // Relative luminance (WCAG 2): white text on dark colours, near-black on light ones.
    let lin = |v: u8| {
        let s = f64::from(v) / 255.0;
        if s <= 0.03928 {
            s / 12.92
        } else {
            ((s + 0.055) / 1.055).powf(2.4)
        }
    };
    let l = 0.2126 * lin(c(0)) + 0.7152 * lin(c(2)) + 0.0722 * lin(c(4));
    let against_white = 1.05 / (l + 0.05);
    let text = if against_white >= ((l + 0.05) / 0.05) {
        "#ffffff"
    } else {
        "#000000"
    };
    // A colour too light to tell the button from the white card (under 3:1, WCAG 2.1
    // 1.4.11) gets a dark edge.
    let edge = if against_white < 3.0 {
        "#1a1a1a"
    } else {
        "transparent"
    };
    format!(":root {{ --brand: #{hex}; --brand-text: {text}; --brand-edge: {edge}; }}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text on a tenant's colour keeps its contrast, and a colour too light to tell from
    /// the white card (under 3:1) gets a dark edge.
    #[test]
    fn a_brand_colour_keeps_its_text_readable_and_its_button_visible() {
        for (colour, text, edge) in [
            ("#ffffff", "#000000", "#1a1a1a"),
            ("#ffff00", "#000000", "#1a1a1a"),
            ("#cccccc", "#000000", "#1a1a1a"),
            ("#777777", "#000000", "transparent"),
            ("#595959", "#ffffff", "transparent"),
            ("#1d4ed8", "#ffffff", "transparent"),
            ("#000000", "#ffffff", "transparent"),
        ] {
            let css = brand_css(colour);
            assert!(
                css.contains(&format!("--brand-text: {text};"))
                    && css.contains(&format!("--brand-edge: {edge};")),
                "{colour}: {css}"
            );
        }
    }

    #[test]
    fn a_page_escapes_what_it_shows_and_names_its_language() {
        let html = render(&Page {
            lang: "de",
            title: "Anmelden bei <Acme>",
            app_name: Some("Acme & Co"),
            lead: "x",
            form: Some(Form {
                button: "Weiter",
                action: "/l/abc",
                csrf: "t\"ok",
            }),
            base_path: "",
            brand: Some("tnt_abc"),
            logo: Some(("tnt_abc", "Acme & Co")),
            link: None,
        });
        assert!(html.contains("<html lang=\"de\">"));
        assert!(html.contains("Anmelden bei &lt;Acme&gt;"));
        assert!(
            html.contains("<title>Anmelden bei &lt;Acme&gt; · Acme &amp; Co</title>"),
            "{html}"
        );
        assert!(html.contains("value=\"t&quot;ok\""));
        assert!(html.contains("<button type=\"submit\">Weiter</button>"));
        assert!(html.contains("/pages/brand/tnt_abc.css"), "{html}");
        assert!(
            html.contains("src=\"/pages/logo/tnt_abc.png\" alt=\"Acme &amp; Co\">"),
            "{html}"
        );
        assert!(!html.contains("<script"));
        let notice = render(&Page {
            lang: "en",
            title: "T",
            app_name: None,
            lead: "gone",
            form: None,
            base_path: "/otp",
            brand: None,
            logo: None,
            link: Some(("/otp/h/hs_1", "Open the page again")),
        });
        assert!(notice.contains("role=\"alert\"") && !notice.contains("<form"));
        assert!(notice.contains("<title>T</title>"), "{notice}");
        assert!(
            notice.contains("<a href=\"&#x2f;otp&#x2f;h&#x2f;hs_1\">Open the page again</a>"),
            "{notice}"
        );
        // (MiniJinja escapes `/` too; browsers read it back.)
        assert!(
            notice.contains("href=\"&#x2f;otp/pages/style.css\""),
            "{notice}"
        );
        for lang in crate::messages::LANGUAGES {
            let s = PageStrings::of(lang);
            assert!(
                !s.confirm_title.is_empty()
                    && s.confirm_lead.contains("{app}")
                    && s.back.contains("{app}"),
                "{lang}"
            );
        }
    }
}
