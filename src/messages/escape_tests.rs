//! `messages`' unit tests of what a message's text holds: HTML escaping, the link a
//! template left out, line breaks.

#![allow(clippy::unwrap_used)]
use super::tests::{fields, vars};
use super::*;

/// A link the template did not place goes before the body's end however the HTML writes
/// it (`</BODY>`, `</body >`, `</body/>` too, after text in any script; not `</bodyx>`),
/// and after the body's last text when there is no end tag; the HTML escapes what it must of
/// a value (`&<>"'`), and no `/`.
#[test]
fn a_link_the_template_left_out_goes_before_the_body_end_in_any_case() {
    let link = "https://otp.example.com/l/AbCd";
    for (html, want) in [
        (
            "<HTML><BODY><p>1</p></BODY></HTML>",
            "<HTML><BODY><p>1</p><p><a href=\"https://otp.example.com/l/AbCd\">https://otp.example.com/l/AbCd</a></p></BODY></HTML>",
        ),
        (
            "<html><body><p>1</p><!-- </body> --></Body></html>",
            "<html><body><p>1</p><!-- </body> --><p><a href=\"https://otp.example.com/l/AbCd\">https://otp.example.com/l/AbCd</a></p></Body></html>",
        ),
        (
            "<html><body><p>1</p></body \n></html>",
            "<html><body><p>1</p><p><a href=\"https://otp.example.com/l/AbCd\">https://otp.example.com/l/AbCd</a></p></body \n></html>",
        ),
        (
            "<html><body><p>İ Größe</p></BODY/></html>",
            "<html><body><p>İ Größe</p><p><a href=\"https://otp.example.com/l/AbCd\">https://otp.example.com/l/AbCd</a></p></BODY/></html>",
        ),
        (
            "<html><body><p>1</p><bodyx></bodyx></html>",
            "<html><body><p>1</p><bodyx></bodyx></html><p><a href=\"https://otp.example.com/l/AbCd\">https://otp.example.com/l/AbCd</a></p>",
        ),
        (
            "<p>1</p>",
            "<p>1</p><p><a href=\"https://otp.example.com/l/AbCd\">https://otp.example.com/l/AbCd</a></p>",
        ),
    ] {
        let mut r = Rendered {
            subject: "s".into(),
            subject_broken: false,
            text: "1".into(),
            html: Some(html.into()),
            sms: None,
        };
        ensure_link(&mut r, link);
        assert_eq!(r.html.as_deref(), Some(want));
    }
    let f = fields(
        "Code",
        "{{ code }}",
        Some("<a href=\"{{ link }}\" title=\"{{ app_name }}\">{{ code }}</a>"),
    );
    let mut v = vars("042917", "en", "login", 600);
    v.link = link;
    v.app_name = "A/B \"Q\" & <R> 'S'";
    let r = render_once(&f, &v).unwrap();
    assert_eq!(
        r.html.as_deref(),
        Some("<a href=\"https://otp.example.com/l/AbCd\" title=\"A/B &quot;Q&quot; &amp; &lt;R&gt; &#x27;S&#x27;\">042917</a>")
    );
}

/// A lone CR a template holds renders as a line break, in the text and the HTML alike, so
/// every way a message goes (a provider's API too) and its preview get the same text.
#[test]
fn a_lone_cr_renders_as_a_line_break() {
    let f = fields(
        "Code",
        "Code\r\n{{ code }}\rnext\r",
        Some("<p>{{ code }}</p>\r<p>x</p>"),
    );
    let r = render_once(&f, &vars("042917", "en", "login", 600)).unwrap();
    // (The engine drops a last line break, as it does a last LF.)
    assert_eq!(r.text, "Code\r\n042917\nnext");
    assert_eq!(r.html.as_deref(), Some("<p>042917</p>\n<p>x</p>"));
}
