//! The pages people see (API.md §14): server-rendered HTML from `templates/pages/`, no
//! JavaScript, no third-party resources, in the language of the code's message (the ten
//! built-in languages, else English). Rendered with MiniJinja, HTML auto-escaped.

mod strings;

use std::sync::LazyLock;

use minijinja::{context, AutoEscape, Environment};

pub use strings::Strings;

/// The stylesheet every page links to (served by otpmint itself).
pub const STYLE_CSS: &str = include_str!("../../templates/pages/style.css");

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // A built-in page that does not compile is a build defect, caught by the tests.
    let _ = env.add_template("page.html", include_str!("../../templates/pages/page.html"));
    env
});

/// What a page shows.
pub struct Page<'a> {
    pub lang: &'a str,
    pub title: &'a str,
    pub lead: &'a str,
    /// With a form: its button, action and CSRF token.
    pub form: Option<Form<'a>>,
    /// The path prefix of `server.public_url` (`""` or `/otp`), for the stylesheet.
    pub base_path: &'a str,
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
                lang => p.lang,
                title => p.title,
                lead => p.lead,
                form => p.form.is_some(),
                button => button,
                action => action,
                csrf => csrf,
                base_path => p.base_path,
            })
        })
        .unwrap_or_else(|_| "<!doctype html><title>otpmint</title>".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_escapes_what_it_shows_and_names_its_language() {
        let html = render(&Page {
            lang: "de",
            title: "Anmelden bei <Acme>",
            lead: "x",
            form: Some(Form {
                button: "Weiter",
                action: "/l/abc",
                csrf: "t\"ok",
            }),
            base_path: "",
        });
        assert!(html.contains("<html lang=\"de\">"));
        assert!(html.contains("Anmelden bei &lt;Acme&gt;"));
        assert!(html.contains("value=\"t&quot;ok\""));
        assert!(html.contains("<button type=\"submit\">Weiter</button>"));
        assert!(!html.contains("<script"));
        let notice = render(&Page {
            lang: "en",
            title: "T",
            lead: "gone",
            form: None,
            base_path: "/otp",
        });
        assert!(notice.contains("role=\"alert\"") && !notice.contains("<form"));
        // (MiniJinja escapes `/` too; browsers read it back.)
        assert!(
            notice.contains("href=\"&#x2f;otp/pages/style.css\""),
            "{notice}"
        );
        for lang in crate::messages::LANGUAGES {
            let s = Strings::of(lang);
            assert!(
                !s.confirm_title.is_empty() && s.confirm_lead.contains("{app}"),
                "{lang}"
            );
        }
    }
}
