//! The built-in templates (templates/<language>/ in the repository), embedded in the binary.

use super::Fields;

/// The languages with a built-in template.
pub const LANGUAGES: [&str; 10] = ["en", "de", "es", "fr", "it", "pt", "nl", "pl", "ja", "zh"];

macro_rules! lang {
    ($l:literal) => {
        (
            $l,
            include_str!(concat!("../../templates/", $l, "/subject.txt")),
            include_str!(concat!("../../templates/", $l, "/text.txt")),
            include_str!(concat!("../../templates/", $l, "/html.html")),
            include_str!(concat!("../../templates/", $l, "/sms.txt")),
        )
    };
}

const SOURCES: [(&str, &str, &str, &str, &str); 10] = [
    lang!("en"),
    lang!("de"),
    lang!("es"),
    lang!("fr"),
    lang!("it"),
    lang!("pt"),
    lang!("nl"),
    lang!("pl"),
    lang!("ja"),
    lang!("zh"),
];

/// Every built-in template, by language.
pub fn all() -> Vec<(&'static str, Fields)> {
    SOURCES
        .iter()
        .map(|(l, subject, text, html, sms)| {
            (
                *l,
                Fields {
                    subject: subject.trim().to_string(),
                    text: text.to_string(),
                    html: Some(html.to_string()),
                    sms: Some(sms.trim().to_string()),
                },
            )
        })
        .collect()
}
