//! Every value is of its key's type (API.md §3): the type the embedded defaults give the key.
//! The config library would turn `"yes"` into `true`, `6.7` into `7` and a string into a
//! list, and refuse an integer past 64 bits without naming its key; these checks refuse each
//! of them first, naming the key and never the value.

use toml::de::{DeTable, DeValue};

use super::{DEFAULT_TOML, LIST_KEYS};

/// The embedded defaults as written, parsed once: each key's type.
static DEFAULTS: std::sync::LazyLock<Option<DeTable<'static>>> =
    std::sync::LazyLock::new(|| DeTable::parse(DEFAULT_TOML).ok().map(|t| t.into_inner()));

/// Why the file's `key` is refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Mistyped {
    pub key: String,
    pub message: String,
}

/// Check a configuration file's text against the defaults' types. A text that is not TOML
/// passes here (the config library says where it breaks), but for a key set twice, which is
/// named here.
pub(super) fn check_file(text: &str) -> Result<(), Mistyped> {
    let user = match DeTable::parse(text) {
        Ok(user) => user,
        Err(e) => return set_twice(&e, text).map_or(Ok(()), Err),
    };
    let Some(defaults) = DEFAULTS.as_ref() else {
        return Ok(());
    };
    walk(user.get_ref(), Some(defaults), "")
}

/// A key written twice, named with its line. TOML's own message says only "duplicate key"
/// beside an excerpt of the source, which is never shown (it may hold a value, API.md §6.25);
/// the error's span is the second key itself, a name and never a value — and is taken only
/// where a key's end is followed by what follows a key (`=`, `.`, `]`).
fn set_twice(e: &toml::de::Error, text: &str) -> Option<Mistyped> {
    if e.message() != "duplicate key" {
        return None;
    }
    let span = e.span()?;
    let key = text.get(span.clone())?.trim();
    let after = text.get(span.end..)?.trim_start_matches([' ', '\t']);
    if key.is_empty()
        || key.chars().count() > 100
        || key.contains(['\n', '='])
        || !after.starts_with(['=', '.', ']'])
    {
        return None;
    }
    let line_start = text.get(..span.start)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(..line_start)?.matches('\n').count() + 1;
    // A key alone at the start of its line is named with the table above it; a table's
    // header, a dotted key's last part or a key inside an inline table by itself.
    let alone = text.get(line_start..span.start)?.trim().is_empty() && !after.starts_with('.');
    let table = text
        .get(..line_start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .and_then(|l| l.trim_start_matches('[').split(']').next())
        .map(str::trim)
        .filter(|t| alone && !t.is_empty());
    let key = match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    };
    Some(Mistyped {
        key,
        message: format!("is set twice (again on line {line})"),
    })
}

fn walk(user: &DeTable<'_>, defaults: Option<&DeTable<'_>>, prefix: &str) -> Result<(), Mistyped> {
    for (k, v) in user {
        let key = format!("{prefix}{}", k.get_ref());
        let default = defaults
            .and_then(|d| d.get(k.get_ref().as_ref()))
            .map(|d| d.get_ref());
        value(v.get_ref(), default, &key)?;
    }
    Ok(())
}

fn value(v: &DeValue<'_>, default: Option<&DeValue<'_>>, key: &str) -> Result<(), Mistyped> {
    let refused = |message: String| {
        Err(Mistyped {
            key: key.to_string(),
            message,
        })
    };
    if let Some(i) = v.as_integer() {
        if i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).is_err() {
            return refused(match super::Settings::range_of(key) {
                Some(range) => format!("must be {range} (got a number past a 64-bit integer)"),
                None => "is out of range (past a 64-bit integer)".into(),
            });
        }
    }
    let Some(d) = default else {
        // A key the defaults lack: the config library names it as unknown (or it is an
        // entry of a map such as `delivery.provider_base_urls`); integers are checked.
        return match v {
            DeValue::Table(t) => walk(t, None, &format!("{key}.")),
            DeValue::Array(items) => items.iter().try_for_each(|x| value(x.get_ref(), None, key)),
            _ => Ok(()),
        };
    };
    if !v.same_type(d) {
        return refused(format!(
            "must be {}, not {}",
            a(d.type_str()),
            a(v.type_str())
        ));
    }
    match (v, d) {
        (DeValue::Table(t), DeValue::Table(dt)) => walk(t, Some(dt), &format!("{key}.")),
        (DeValue::Array(items), DeValue::Array(ds)) => {
            let of = ds.first().map(|x| x.get_ref());
            for x in items {
                match of {
                    Some(of) if !x.get_ref().same_type(of) => {
                        return refused(format!(
                            "must be a list of {}s, not one holding {}",
                            of.type_str(),
                            a(x.get_ref().type_str())
                        ));
                    }
                    _ => value(x.get_ref(), of, key)?,
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The items of a list key's environment value: comma-separated (`587,2525`), or written as
/// in the file, a TOML array (`[587, 2525]`, `["10.0.0.0/8", "::1"]`). Blank items are
/// dropped.
pub(super) fn env_list(text: &str) -> Result<Vec<String>, String> {
    let trimmed = text.trim();
    if !trimmed.starts_with('[') {
        return Ok(text
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect());
    }
    let refused = || {
        "must be a list: comma-separated (`587,2525`) or a TOML array (`[587, 2525]`, \
         text in quotes: `[\"192.0.2.0/24\"]`)"
            .to_string()
    };
    let source = format!("v = {trimmed}");
    let table = DeTable::parse(&source).map_err(|_| refused())?;
    let Some(DeValue::Array(items)) = table.get_ref().get("v").map(|v| v.get_ref()) else {
        return Err(refused());
    };
    items
        .iter()
        .map(|item| match item.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            DeValue::Integer(i) => Ok(i.to_string()),
            _ => Err(refused()),
        })
        .filter(|item| item.as_ref().map_or(true, |s| !s.trim().is_empty()))
        .collect()
}

/// Check an `OTPMINT__…` variable's text against its key's type: a boolean is `true` or
/// `false` (in any case), an integer a whole number (each item of a list key). A list key's
/// items come back (`None` for any other key).
pub(super) fn check_env(key: &str, text: &str) -> Result<Option<Vec<String>>, String> {
    // A list's form first, whatever its items' type (an empty default has none).
    let list = LIST_KEYS
        .contains(&key)
        .then(|| env_list(text))
        .transpose()?;
    check_items(key, list.as_deref().unwrap_or(&[text.to_string()]))?;
    Ok(list)
}

/// Each item of `key`'s value against the type of its default.
fn check_items(key: &str, items: &[String]) -> Result<(), String> {
    let mut at = DEFAULTS.as_ref();
    let mut found = None;
    for part in key.split('.') {
        let v = at.and_then(|t| t.get(part)).map(|v| v.get_ref());
        at = v.and_then(DeValue::as_table);
        found = v;
    }
    let Some(d) = found else {
        return Ok(());
    };
    let of = match d {
        DeValue::Array(items) if LIST_KEYS.contains(&key) => match items.first() {
            Some(x) => x.get_ref(),
            None => return Ok(()),
        },
        d => d,
    };
    for item in items.iter().map(|s| s.trim()) {
        let boolean = item.eq_ignore_ascii_case("true") || item.eq_ignore_ascii_case("false");
        if of.is_bool() && !boolean {
            return Err("must be true or false".into());
        }
        // Its range is checked later, naming the bounds (a u64 too large included).
        if of.is_integer() && item.parse::<i128>().is_err() {
            return Err(match super::Settings::range_of(key) {
                Some(range) => format!("must be {range}"),
                None => "must be a whole number".into(),
            });
        }
    }
    Ok(())
}

fn a(type_str: &str) -> String {
    let article = if type_str.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {type_str}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Option<(String, String)> {
        check_file(text).err().map(|m| (m.key, m.message))
    }

    #[test]
    fn a_value_of_another_type_than_its_default_is_refused_by_key() {
        for (text, key) in [
            (
                "[smtp]\nallow_private_hosts = \"yes\"\n",
                "smtp.allow_private_hosts",
            ),
            ("[compat]\notpmint = 2\n", "compat.otpmint"),
            ("[otp]\ncode_length = 6.7\n", "otp.code_length"),
            ("[smtp]\nallowed_ports = [587.9]\n", "smtp.allowed_ports"),
            ("[smtp]\nallowed_ports = \"587\"\n", "smtp.allowed_ports"),
            ("[server]\nbind = 8080\n", "server.bind"),
            (
                "[limits]\nper_ip_per_second = 18446744073709551615\n",
                "limits.per_ip_per_second",
            ),
            ("smtp = 1\n", "smtp"),
        ] {
            let (k, message) = refused(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(k, key, "{text}");
            assert!(
                !message.contains("yes") && !message.contains("6.7"),
                "{message}"
            );
        }
        let (_, m) = refused("[smtp]\nallow_private_hosts = \"yes\"\n").unwrap();
        assert_eq!(m, "must be a boolean, not a string");
    }

    #[test]
    fn values_of_their_types_pass_and_so_do_entries_the_defaults_cannot_type() {
        for text in [
            "[smtp]\nallow_private_hosts = true\nallowed_ports = [25, 2525]\n",
            "[otp]\ncode_length = 8\n",
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
            "[delivery.provider_base_urls]\npostmark = \"https://127.0.0.1:9\"\n",
            "[limits]\nper_ip_per_second = 9_223_372_036_854_775_807\n",
            "not toml at all [",
        ] {
            assert_eq!(check_file(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn environment_values_are_read_as_their_keys_type() {
        assert!(check_env("smtp.allow_private_hosts", "yes").is_err());
        assert!(check_env("smtp.allow_private_hosts", "true").is_ok());
        assert!(check_env("smtp.allow_private_hosts", "False").is_ok());
        assert!(check_env("smtp.allow_private_hosts", "1").is_err());
        assert!(check_env("otp.code_length", "6.7").is_err());
        assert!(check_env("otp.code_length", "8").is_ok());
        assert!(check_env("smtp.allowed_ports", "587,x").is_err());
        assert!(check_env("smtp.allowed_ports", "587, 2525").is_ok());
        assert!(check_env("admin.token", "0123").is_ok());
        assert!(check_env("no.such_key", "1").is_ok());
    }
}
