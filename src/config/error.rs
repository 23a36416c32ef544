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
}

/// A config library message with every value removed: a type error on a secret
/// (`invalid type: string "…"`) would otherwise print the secret, and a TOML syntax error
/// quotes the offending source line — whatever the secret's quoting (API.md §6.25).
pub(super) fn without_values(message: String) -> String {
    let kept: Vec<&str> = message.lines().filter(|l| !is_source_snippet(l)).collect();
    let message = kept.join(" ");
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
