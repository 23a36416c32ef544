//! `messages`' unit tests: the built-in templates, the lint, rendering and the locale chain.

use super::*;
use crate::domain::locale::Locale;

pub(super) fn vars<'a>(code: &'a str, locale: &'a str, purpose: &'a str, ttl: u32) -> Vars<'a> {
    Vars {
        code,
        ttl_seconds: ttl,
        expires_at: 1_767_225_600_000,
        app_name: "Acme <Shop> & Co",
        purpose,
        email: "ada@example.com",
        locale,
        link: "",
    }
}

fn fields_of(e: &[TemplateError]) -> Vec<&'static str> {
    e.iter().map(|e| e.field).collect()
}

pub(super) fn fields(subject: &str, text: &str, html: Option<&str>) -> Fields {
    Fields {
        subject: subject.into(),
        text: text.into(),
        html: html.map(str::to_string),
        sms: None,
    }
}

#[test]
fn every_builtin_text_message_starts_with_the_code_and_fits() {
    let set = TemplateSet::builtins();
    for lang in LANGUAGES {
        for ttl in [60, 600, 86400] {
            let r = set
                .render(lang, &vars("042917", lang, "login", ttl))
                .unwrap();
            let sms = r
                .sms
                .unwrap_or_else(|| panic!("{lang} has no text message"));
            assert!(sms.starts_with("042917 "), "{lang}: {sms}");
            assert!(sms.contains("Acme <Shop> & Co"), "{lang}: {sms}");
            assert!(sms.chars().count() <= SMS_MAX_CHARS, "{lang}");
            assert!(!sms.contains("{{") && !sms.contains('\n'), "{lang}: {sms}");
        }
    }
}

#[test]
fn a_text_message_must_show_the_code_and_render_within_320_characters() {
    let mut f = fields("Code", "{{ code }}", None);
    f.sms = Some("{{ code }} for {{ app_name }}".into());
    lint(&f, 6).unwrap();
    f.sms = Some("your code is ready".into());
    assert_eq!(lint(&f, 6).unwrap_err()[0].field, "sms");
    f.sms = Some("  ".into());
    assert_eq!(lint(&f, 6).unwrap_err()[0].field, "sms");
    f.sms = Some("{{ code }} {{ nope }}".into());
    assert_eq!(lint(&f, 6).unwrap_err()[0].field, "sms");
    // Short in source, long once rendered.
    f.sms = Some("{{ code }}{% for i in range(40) %} {{ app_name }}{% endfor %}".into());
    let e = lint(&f, 6).unwrap_err();
    assert_eq!(e[0].field, "sms", "{e:?}");
    assert!(e[0].message.contains("320"), "{e:?}");
    // Within 320 for a short purpose, over it for a long one: the check passes, a preview
    // with the long purpose says why it has no text message.
    f.sms = Some(format!(
        "{{{{ code }}}} {} {{{{ purpose }}}} {{{{ purpose }}}}",
        "x".repeat(250)
    ));
    lint(&f, 6).unwrap();
    let long = "p".repeat(64);
    assert!(render_once(&f, &vars("123456", "en", "login", 60))
        .unwrap()
        .sms
        .is_some());
    let e = render_once(&f, &vars("123456", "en", &long, 60)).unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].field, "sms", "{e:?}");
    assert!(e[0].message.contains("320"), "{e:?}");
    // At send time, a set tells a text message over the limit for these values from one
    // that leaves out the code (the log says which).
    let mut set = TemplateSet {
        env: sandbox(),
        locales: BTreeMap::new(),
        bytes: 0,
    };
    set.add("t", f.clone());
    assert!(!set.sms_over_limit("t", &vars("123456", "en", "login", 60)));
    assert!(set.sms_over_limit("t", &vars("123456", "en", &long, 60)));
    assert!(!set.sms_over_limit("nowhere", &vars("123456", "en", &long, 60)));
    // A text message is not part of the email: it does not need to be there at all.
    f.sms = None;
    let r = render_once(&f, &vars("123456", "en", "login", 60)).unwrap();
    assert_eq!(r.sms, None);
}

#[test]
fn every_builtin_renders_the_code_whole_and_passes_its_own_lint() {
    let set = TemplateSet::builtins();
    assert_eq!(set.locales().count(), LANGUAGES.len());
    for lang in LANGUAGES {
        let f = builtin_fields(lang).unwrap();
        lint(&f, 6).unwrap_or_else(|e| panic!("{lang}: {e:?}"));
        for purpose in ["default", "login", "signup", "password_reset", "x.y"] {
            for ttl in [1, 30, 60, 61, 600, 7200, 86400, 86399] {
                let r = set
                    .render(lang, &vars("042917", lang, purpose, ttl))
                    .unwrap();
                assert!(holds_code(&r.text, "042917"), "{lang} text");
                let html = r.html.unwrap();
                assert!(holds_code(&html, "042917"), "{lang} html");
                assert!(!r.subject.is_empty() && !r.subject.contains('\n'));
                // The tenant's name is escaped in HTML and left alone in text.
                assert!(html.contains("Acme &lt;Shop&gt; &amp; Co"), "{lang}");
                assert!(r.text.contains("Acme <Shop> & Co"), "{lang}");
                assert!(!r.text.contains("{{") && !html.contains("{%"));
            }
        }
    }
}

#[test]
fn lifetimes_read_naturally() {
    let set = TemplateSet::builtins();
    let text = |lang: &str, ttl: u32| {
        set.render(lang, &vars("1234", lang, "login", ttl))
            .unwrap()
            .text
    };
    assert!(text("en", 600).contains("It expires in 10 minutes."));
    assert!(text("en", 60).contains("It expires in 1 minute."));
    assert!(text("en", 1).contains("It expires in 1 second."));
    assert!(text("en", 7200).contains("It expires in 2 hours."));
    assert!(text("en", 600).contains("sign in to Acme"));
    assert!(text("pl", 120).contains("za 2 minuty"));
    assert!(text("pl", 300).contains("za 5 minut"));
    assert!(text("pl", 60).contains("za 1 minutę"));
    assert!(text("de", 600).contains("10 Minuten lang gültig"));
    assert!(text("ja", 600).contains("10分"));
}

#[test]
fn lint_names_field_and_line() {
    let ok = fields(
        "Code for {{ app_name }}",
        "Your code:\n{{ code }}\n",
        Some("<p>{{ code }}</p>"),
    );
    assert_eq!(lint(&ok, 6), Ok(()));

    let e = lint(&fields("Hi", "line one\n{{ code }\n", None), 6).unwrap_err();
    assert_eq!((e[0].field, e[0].line), ("text", Some(2)));

    let e = lint(
        &fields("Hi", "a\nb\n{{ code }} {{ secret_thing }}", None),
        6,
    )
    .unwrap_err();
    assert_eq!((e[0].field, e[0].line), ("text", Some(3)));
    assert!(e[0].message.contains("secret_thing"));

    let e = lint(&fields("Hi", "no code here", None), 6).unwrap_err();
    assert_eq!(e[0].field, "text");
    let e = lint(&fields("Hi", "{{ code }}", Some("<p>nothing</p>")), 6).unwrap_err();
    assert_eq!(e[0].field, "html");
    // A code split up is no code.
    let e = lint(&fields("Hi", "{{ code[:3] }} {{ code[3:] }}", None), 6).unwrap_err();
    assert_eq!(e[0].field, "text");

    let e = lint(&fields("Hi\r\nBcc: x@example.com", "{{ code }}", None), 6).unwrap_err();
    assert_eq!(e[0].field, "subject");
    let e = lint(&fields(&"x".repeat(201), "{{ code }}", None), 6).unwrap_err();
    assert_eq!(e[0].field, "subject");
    let e = lint(
        &fields(
            "Hi",
            &format!("{{{{ code }}}}{}", "x".repeat(64 * 1024)),
            None,
        ),
        6,
    )
    .unwrap_err();
    assert_eq!(e[0].field, "text");
    let e = lint(&fields(" ", "{{ code }}", None), 6).unwrap_err();
    assert_eq!(e[0].field, "subject");
    // Every part's errors in one answer (a black-box audit saw the subject's alone).
    let e = lint(&fields(&"x".repeat(201), "{{ foo }}", None), 6).unwrap_err();
    assert_eq!(fields_of(&e), ["subject", "text"], "{e:?}");
    let e = lint(&fields("a\nb", "{{ code }} {{ x }}", None), 6).unwrap_err();
    assert_eq!(fields_of(&e), ["subject", "text"], "{e:?}");
    // The render's refusals of the other parts too (the refused part stands in as a plain
    // one, and is not refused twice).
    let e = lint(
        &fields(&"x".repeat(201), "Hello", Some("<p>{{ code }}</p>")),
        6,
    )
    .unwrap_err();
    assert_eq!(fields_of(&e), ["subject", "text"], "{e:?}");
    let e = lint(&fields("Hi", "{{ nope }}", Some("<!-- {{ code }} -->")), 6).unwrap_err();
    assert_eq!(fields_of(&e), ["text", "html"], "{e:?}");
}

/// HTML shows the code where a mail client shows text (API.md §6.29, §8; found by a
/// black-box audit): in a comment, an attribute or the head it shows nothing.
#[test]
fn an_html_part_must_show_the_code_not_only_hold_it() {
    for hidden in [
        "<!-- {{ code }} --><p>Hallo</p>",
        "<img alt=\"{{ code }}\" src=\"x.png\">",
        "<a title='{{ code }}' href=\"#\">open</a>",
        "<html><head><title>{{ code }}</title></head><body><p>Hi</p></body></html>",
        "<style>/* {{ code }} */</style><p>Hi</p>",
        "<title>{{ code }}</title><title-bar>x</title-bar>",
        "<script>var c = '</scripts>{{ code }}';</script><p>Hi</p>",
    ] {
        let e = lint(&fields("Hi", "{{ code }}", Some(hidden)), 6).unwrap_err();
        assert_eq!(e[0].field, "html", "{hidden}");
    }
    for shown in [
        "<p>Your code: <b>{{ code }}</b></p>",
        "<p>1 < 2: {{ code }}</p>",
        "<div data-x=\"a>b\">{{ code }}</div>",
        "<html><head><title>Code</title></head><body>{{ code }}</body></html>",
        // The review's cases: a head left open, names that only begin like a hidden
        // element's, empty comments, a quote in a bare attribute, upper case, a doctype.
        "<html><head><meta charset=utf-8><body><p>{{ code }}",
        "<title-bar>{{ code }}</title-bar>",
        "<head-line>x</head-line><P CLASS=big>{{ code }}</P>",
        "<!--><p>{{ code }}</p>",
        "<!---><p>{{ code }}</p>",
        "<p title=it's>{{ code }}</p>",
        "<!DOCTYPE html><BR/>{{ code }}",
        "<!--[if mso]><p>x</p><![endif]--><!--[if !mso]><!--><p>{{ code }}</p><!--<![endif]-->",
    ] {
        assert_eq!(
            lint(&fields("Hi", "{{ code }}", Some(shown)), 6),
            Ok(()),
            "{shown}"
        );
    }
    // A tag parts digits: the code beside other digits across one is still whole, and a
    // code split by one is not.
    assert!(html_shows_code("<p>1</p>234567<p>8</p>", "234567"));
    assert!(!html_shows_code("<p>12<b>3456</b></p>", "123456"));
}

/// A preview answers what a send would do for its values (found by a black-box audit: a
/// branch that leaves out the code, or breaks the subject, for one purpose passed the lint's
/// sample and previewed as a message no send uses — the send falls back to the built-in).
#[test]
fn a_preview_refuses_a_branch_a_send_would_not_use() {
    let no_code = fields(
        "Hi",
        "{% if purpose == 'nocode' %}none{% else %}{{ code }}{% endif %}",
        Some("<p>{% if purpose == 'nohtml' %}x{% else %}{{ code }}{% endif %}</p>"),
    );
    assert_eq!(lint(&no_code, 6), Ok(()));
    assert!(render_once(&no_code, &vars("123456", "en", "login", 60)).is_ok());
    for (purpose, field) in [("nocode", "text"), ("nohtml", "html")] {
        let e = render_once(&no_code, &vars("123456", "en", purpose, 60)).unwrap_err();
        assert_eq!(fields_of(&e), [field], "{e:?}");
        assert!(e[0].message.contains("{{ code }}"), "{e:?}");
    }
    let broken = fields(
        "{% if purpose == 'nl' %}a{{ '\\n' }}b{% else %}S{% endif %}",
        "{{ code }}",
        None,
    );
    assert_eq!(lint(&broken, 6), Ok(()));
    let e = render_once(&broken, &vars("123456", "en", "nl", 60)).unwrap_err();
    assert_eq!(fields_of(&e), ["subject"], "{e:?}");
    assert!(e[0].message.contains("one line"), "{e:?}");
}

#[test]
fn the_sandbox_has_no_files_and_a_budget() {
    for t in [
        "{% include 'x.txt' %}{{ code }}",
        "{% import 'x' as y %}{{ code }}",
        "{% extends 'base' %}{{ code }}",
        "{% macro m() %}{% endmacro %}{{ code }}",
    ] {
        let e = lint(&fields("Hi", t, None), 6).unwrap_err();
        assert_eq!(e[0].field, "text", "{t}");
    }
    let burn =
        "{% for i in range(10000) %}{% for j in range(10000) %}{{ code }}{% endfor %}{% endfor %}";
    let e = lint(&fields("Hi", burn, None), 6).unwrap_err();
    assert!(e[0].message.contains("too much work"), "{:?}", e);
    // Strict undefined: a typo in an attribute fails at save time, not at send time.
    let e = lint(&fields("Hi", "{{ code }}{{ email.nope.deeper }}", None), 6).unwrap_err();
    assert_eq!(e[0].field, "text");
}

#[test]
fn chain_and_resolution_follow_the_contract() {
    let l = |s: &str| Locale::parse(s).unwrap();
    let names = |c: Vec<Locale>| c.iter().map(|l| l.as_str().to_string()).collect::<Vec<_>>();
    assert_eq!(
        names(chain(Some(&l("pt-BR")), &l("de-AT"))),
        ["pt-BR", "pt", "de-AT", "de", "en"]
    );
    assert_eq!(names(chain(None, &l("en"))), ["en"]);

    let tenant = TemplateSet::new(&[TenantTemplate {
        locale: "pt-BR".into(),
        subject: "S".into(),
        text: "{{ code }}".into(),
        html: None,
        sms: None,
        updated_at: 0,
    }]);
    assert_eq!(
        resolve(&chain(Some(&l("pt-BR")), &l("en")), |x| tenant.has(x)),
        (l("pt-BR"), Source::Tenant)
    );
    assert_eq!(
        resolve(&chain(Some(&l("pt-PT")), &l("en")), |x| tenant.has(x)),
        (l("pt"), Source::Builtin)
    );
    assert_eq!(
        resolve(&chain(Some(&l("sv")), &l("fi")), |x| tenant.has(x)),
        (l("en"), Source::Builtin)
    );
    assert_eq!(
        resolve(&chain(Some(&l("sv")), &l("de-CH")), |_| false),
        (l("de"), Source::Builtin)
    );
    let r = tenant
        .render("pt-BR", &vars("999999", "pt-BR", "default", 600))
        .unwrap();
    assert_eq!(
        (r.subject.as_str(), r.text.as_str(), r.html),
        ("S", "999999", None)
    );
}

#[test]
fn every_builtin_places_a_magic_link_as_a_translated_button_and_line() {
    let set = TemplateSet::builtins();
    let link = "https://otp.example.com/l/AbCdEfGhIjKlMnOpQrStUvWxYz012345";
    let mut buttons = std::collections::BTreeSet::new();
    for lang in LANGUAGES {
        let mut v = vars("042917", lang, "login", 600);
        v.link = link;
        let mut r = set.render(lang, &v).unwrap();
        let html = r.html.clone().unwrap();
        // Once in the text, on a line of its own after a translated line that leads to it.
        assert_eq!(r.text.matches(link).count(), 1, "{lang}: {}", r.text);
        let before = r.text[..r.text.find(link).unwrap()].trim_end_matches('\n');
        let lead = before.lines().last().unwrap().to_string();
        assert!(
            !lead.trim().is_empty() && !lead.contains("042917"),
            "{lang}"
        );
        // A button in the HTML: the link, as it is (no `&#x2f;` a link scanner cannot read),
        // as the href of an <a> with its own text.
        assert_eq!(
            html.matches(&format!("href=\"{link}\"")).count(),
            1,
            "{lang}"
        );
        let at = html.find(&format!("href=\"{link}\"")).unwrap();
        let text_start = at + html[at..].find('>').unwrap() + 1;
        let button =
            html[text_start..text_start + html[text_start..].find("</a>").unwrap()].to_string();
        assert!(!button.trim().is_empty(), "{lang}");
        buttons.insert(button.clone());
        // The fallback adds nothing when the template placed the link.
        ensure_link(&mut r, link);
        assert_eq!(r.text.matches(link).count(), 1, "{lang}");
        assert_eq!(r.html.unwrap(), html, "{lang}");
        // Without a link, neither the button nor the line.
        let r = set
            .render(lang, &vars("042917", lang, "login", 600))
            .unwrap();
        assert!(!r.html.unwrap().contains(&button), "{lang}");
        assert!(!r.text.contains(&lead), "{lang}");
    }
    assert_eq!(
        buttons.len(),
        LANGUAGES.len(),
        "one translation each: {buttons:?}"
    );
}

#[test]
fn a_subject_is_sent_as_one_line_without_control_characters() {
    // What a branch the lint's sample did not take may render: never a second header line,
    // never an escape sequence in the person's mail client.
    assert_eq!(
        super::one_line("Code\r\nBcc: x@example.com\t\u{1b}[31m 123 \u{0}"),
        "Code Bcc: x@example.com [31m 123"
    );
    let e = lint(&fields("Code{{ \"\\u001b[31m\" }}", "{{ code }}", None), 6).unwrap_err();
    assert_eq!(e[0].field, "subject");
    // Unicode's line and paragraph separators break a line too (API.md §8), in the source
    // and rendered (found by a black-box audit); at send they become a space.
    for subject in ["Code\u{2028}Bcc", "Code\u{2029}", "Code{{ \"\\u2028\" }}"] {
        let e = lint(&fields(subject, "{{ code }}", None), 6).unwrap_err();
        assert_eq!((e[0].field, e[0].line), ("subject", Some(1)), "{subject:?}");
        assert!(e[0].message.contains("line"), "{e:?}");
    }
    assert_eq!(super::one_line("Code\u{2028}123"), "Code 123");
    // Nothing that shows otherwise than it is: a right-to-left override, a zero width space
    // (as a sender's name; found by a black-box audit). A variation selector is text.
    for subject in ["Code \u{202E}321", "Co\u{200B}de"] {
        let e = lint(&fields(subject, "{{ code }}", None), 6).unwrap_err();
        assert_eq!((e[0].field, e[0].line), ("subject", Some(1)), "{subject:?}");
        assert!(e[0].message.contains("bidirectional"), "{e:?}");
    }
    assert!(lint(&fields("Code \u{2764}\u{FE0F}", "{{ code }}", None), 6).is_ok());
    // Nor one a string literal's escape renders (the source is plain ASCII): the lint
    // refuses it, and a send that meets it uses the built-in template.
    let escaped = "{{ \"\\u202E\" }}321";
    let e = lint(&fields(escaped, "{{ code }}", None), 6).unwrap_err();
    assert_eq!((e[0].field, e[0].line), ("subject", Some(1)), "{e:?}");
    assert!(e[0].message.contains("render"), "{e:?}");
    let stored = TemplateSet::new(&[TenantTemplate {
        locale: "en".into(),
        subject: escaped.into(),
        text: "{{ code }}".into(),
        html: None,
        sms: None,
        updated_at: 0,
    }]);
    let r = stored
        .render("en", &vars("123456", "en", "default", 600))
        .unwrap();
    assert!(!super::subject_fits(&r), "{:?}", r.subject);
}

#[test]
fn a_body_with_a_control_character_other_than_a_line_break_or_tab_is_refused() {
    // A NUL reached the mail as it was on SQLite and failed PostgreSQL's write (a 500).
    let e = lint(&fields("Code", "Hi\n{{ code }} a\u{0}b", None), 6).unwrap_err();
    assert_eq!((e[0].field, e[0].line), ("text", Some(2)), "{e:?}");
    let e = lint(
        &fields("Code", "{{ code }}", Some("<p>{{ code }}\u{1b}</p>")),
        6,
    )
    .unwrap_err();
    assert_eq!((e[0].field, e[0].line), ("html", Some(1)), "{e:?}");
    let mut f = fields("Code", "{{ code }}", None);
    f.sms = Some("{{ code }}\u{7}".into());
    let e = lint(&f, 6).unwrap_err();
    assert_eq!(e[0].field, "sms", "{e:?}");
    // Nor one it renders (a string literal's).
    let e = lint(&fields("Code", "{{ code }}{{ \"\\u0000\" }}", None), 6).unwrap_err();
    assert_eq!(e[0].field, "text", "{e:?}");
    // Line breaks (either kind) and tabs are text.
    lint(
        &fields(
            "Code",
            "Hi,\r\n\t{{ code }}\n",
            Some("<p>\n\t{{ code }}</p>"),
        ),
        6,
    )
    .unwrap();
}

/// A text message says a lifetime of two hours or more in hours, not "1440 min", and never
/// rounds up; an app name ending in a full stop ("Acme Ltd.") gets no second one (found by
/// the SMS audit: "Ltd.. Gültig").
#[test]
fn text_messages_read_naturally_for_long_lifetimes_and_names_ending_in_a_stop() {
    let set = TemplateSet::builtins();
    let sms = |lang: &str, ttl: u32, app: &str| {
        let mut v = vars("042917", lang, "login", ttl);
        v.app_name = app;
        set.render(lang, &v).unwrap().sms.unwrap()
    };
    for (ttl, en) in [
        (3599, "59 min"),
        (7199, "119 min"),
        (7200, "2 h"),
        (9000, "2 h"),
        (86400, "24 h"),
    ] {
        let t = sms("en", ttl, "Acme");
        assert!(t.contains(&format!("It expires in {en}.")), "{ttl}: {t}");
    }
    assert!(sms("de", 86400, "Acme").contains("Gültig für 24 Std. Geben"));
    assert!(sms("ja", 86400, "Acme").contains("24 時間です"));
    for lang in LANGUAGES {
        for app in ["Acme Ltd.", "Acme", "Yahoo!", "Acme…"] {
            let t = sms(lang, 600, app);
            for doubled in ["..", "!.", "….", "?."] {
                assert!(!t.contains(doubled), "{lang}: {t}");
            }
            assert!(t.contains(app), "{lang}: {t}");
        }
    }
    assert!(sms("de", 600, "Acme Ltd.").contains("für Acme Ltd. Gültig"));
    assert!(sms("de", 600, "Acme").contains("für Acme. Gültig"));
}

#[test]
fn the_builtins_never_promise_more_time_than_the_code_has() {
    // Found by a black-box audit: 61 and 90 seconds read "2 minutes", and a text message
    // said "1 min" for one second.
    let set = TemplateSet::builtins();
    let r = |ttl| {
        set.render("en", &vars("042917", "en", "login", ttl))
            .unwrap()
    };
    for (ttl, says, sms_says) in [
        (1, "1 second", "1 s."),
        (30, "30 seconds", "30 s."),
        (61, "1 minute", "1 min."),
        (90, "1 minute", "1 min."),
        (600, "10 minutes", "10 min."),
        (7200, "2 hours", "2 h."),
    ] {
        let m = r(ttl);
        assert!(
            m.text.contains(&format!("It expires in {says}.")),
            "{ttl}: {}",
            m.text
        );
        assert!(
            m.html.unwrap().contains(&format!("It expires in {says}.")),
            "{ttl}"
        );
        let sms = m.sms.unwrap();
        assert!(
            sms.contains(&format!("It expires in {sms_says}")),
            "{ttl}: {sms}"
        );
    }
    // Every language counts whole minutes down, and says seconds under one.
    for lang in LANGUAGES {
        let sms = set
            .render(lang, &vars("042917", lang, "login", 90))
            .unwrap()
            .sms
            .unwrap();
        assert!(sms.contains("1 ") && !sms.contains("2 "), "{lang}: {sms}");
    }
}
