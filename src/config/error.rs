//! Configuration errors, and the rule that none of them prints a configured value.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration error in {source_name}: {message}")]
    Load {
        source_name: String,
        message: String,
    },
    #[error("configuration error: `{key}` {message}")]
    Invalid { key: String, message: String },
    /// Two keys that exclude each other both set (a value and its file); the loader names
    /// the layer that set each.
    #[error("configuration error: `{key}` and `{other}` are both set; keep one{hint}")]
    Conflict {
        key: String,
        other: String,
        /// Said after "keep one": how to leave one out where that is not plain.
        hint: String,
    },
}

/// A config library message said in the configuration's words, with the key it names: an
/// unknown choice of one of the settings' enums lists the choices ("`registration.mode`
/// must be one of open, admin, closed", not "enum RegistrationMode does not have variant
/// constructor …").
pub(super) fn explained(message: String) -> (Option<String>, String) {
    let key = message
        .rsplit_once(" for key `")
        .and_then(|(_, k)| k.split_once('`'))
        .map(|(k, _)| k.to_string());
    let choices = message
        .strip_prefix("enum ")
        .and_then(|rest| rest.split_once(" does not have variant constructor"))
        .and_then(|(name, _)| super::choices_of(name));
    match (key, choices) {
        (Some(key), Some(choices)) => {
            let message = format!("`{key}` must be one of {}", choices.join(", "));
            (Some(key), message)
        }
        (Some(key), None) => {
            // A number its type cannot hold (too big, negative, not a number): the range
            // the key is checked against too (API.md §6.31).
            let number = message.contains("integer") || message.contains("expected u");
            // A list item's range is its list's (`smtp.allowed_ports[0]`).
            let list = key.split('[').next().unwrap_or_default();
            let message = match super::Settings::range_of(list) {
                Some(range) if number => format!("{message}; `{list}` must be {range}"),
                _ => message,
            };
            (Some(key), message)
        }
        (None, _) => (None, message),
    }
}

/// The names an enum of the settings is written with, as serde reads them: asked of its
/// `Deserialize` itself, so the list cannot drift from the type.
pub(super) fn variants_of<T: serde::de::DeserializeOwned>(
) -> (&'static str, &'static [&'static str]) {
    use serde::de::{Error, Visitor};
    struct Probe(Option<(&'static str, &'static [&'static str])>);
    impl<'de> serde::Deserializer<'de> for &mut Probe {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not an enum"))
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some((name, variants));
            Err(Self::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
            identifier ignored_any
        }
    }
    let mut probe = Probe(None);
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or(("", &[]))
}

/// A config library message with every value removed: a type error on a secret
/// (`invalid type: string "…"`) would otherwise print the secret, and a TOML syntax error
/// quotes the offending source line — whatever the secret's quoting (API.md §6.25).
pub(super) fn without_values(message: String) -> String {
    let kept: Vec<&str> = message.lines().filter(|l| !is_source_snippet(l)).collect();
    // serde's own quoting of the value (``integer `5` ``) goes first; the key stays.
    let message = crate::domain::policy::without_values(&kept.join(" "));
    let mut out = String::with_capacity(message.len());
    let chars: Vec<char> = message.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let opens_single =
            c == '\'' && (i == 0 || !chars[i - 1].is_alphanumeric()) && chars.len() > i + 1;
        if c == '"' || opens_single {
            match chars[i + 1..].iter().position(|&d| d == c) {
                Some(len) => {
                    out.push(c);
                    out.push('…');
                    out.push(c);
                    i += len + 2;
                    continue;
                }
                None => {
                    // An unterminated quote: everything after it may be the value.
                    out.push(c);
                    out.push('…');
                    break;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// A line of a TOML error's source excerpt: `  |`, `2 | token = '…`, `  |   ^`.
fn is_source_snippet(line: &str) -> bool {
    match line.split_once('|') {
        Some((gutter, _)) => gutter.trim().chars().all(|c| c.is_ascii_digit()),
        None => false,
    }
}
