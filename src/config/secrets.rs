//! What the settings hold beyond their keys: secrets read from files (API.md §18.4), the
//! notes a person starting the server should read (§18.8), and URLs shown without their
//! passwords.

use std::path::{Path, PathBuf};

use config::Config;
use secrecy::SecretString;

use super::{ConfigError, Settings, ENV_PREFIX};

impl Settings {
    /// What a person starting the server should know (API.md §18.8), one sentence each:
    /// the admin API is off, the admin token is short, and `OTPMINT_…` variables in `env`
    /// that match no key (a single `_` after `OTPMINT`, say) — named, never their values.
    pub fn start_notes(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Vec<(bool, String)> {
        use secrecy::ExposeSecret;
        let mut notes = Vec::new();
        let token = self.admin.token.expose_secret();
        if token.is_empty() {
            notes.push((
                false,
                "the admin API is off: admin.token is empty (the CLI still manages tenants)"
                    .to_string(),
            ));
        } else if token.chars().count() < 32 {
            notes.push((
                true,
                "admin.token is shorter than 32 characters: use a long random one (`openssl rand -base64 32`)"
                    .to_string(),
            ));
        }
        // An empty list (an unset variable in a compose file: `OTPMINT__SMTP__ALLOWED_PORTS=`)
        // refuses every relay: allowed, but said.
        if self.smtp.allowed_ports.is_empty() {
            notes.push((
                true,
                "smtp.allowed_ports is empty: every tenant's SMTP relay is refused (smtp_port_not_allowed); only email and SMS APIs and HTTP delivery can send (the default is 465, 587, 2525)"
                    .to_string(),
            ));
        }
        // Variables of the project's own tests, tools, packaging and client libraries (their
        // docs name them), not settings.
        const TOOLS: &[&str] = &[
            "OTPMINT_TEST_",
            "OTPMINT_BROWSER_TESTS",
            "OTPMINT_WRITE_",
            "OTPMINT_SCHEMATHESIS_",
            "OTPMINT_PURGE_DATA",
            "OTPMINT_BINARY",
            "OTPMINT_URL",
            "OTPMINT_SECRET_KEY",
            "OTPMINT_RETURN_URL",
            "OTPMINT_LOOPBACK_WEBHOOKS",
        ];
        // The configuration file's path (`--config`), read by the command line.
        const CONFIG_FILE: &str = "OTPMINT_CONFIG";
        let mut stray: Vec<String> = env
            .into_iter()
            .map(|(name, _)| name)
            .filter(|n| {
                n.to_ascii_uppercase().starts_with("OTPMINT")
                    && !n.starts_with(ENV_PREFIX)
                    && n != CONFIG_FILE
                    && !TOOLS.iter().any(|t| n.starts_with(t))
            })
            .collect();
        stray.sort();
        for name in stray {
            notes.push((
                true,
                format!(
                    "the environment variable {name} matches no setting and is ignored: settings are OTPMINT__SECTION__KEY, with two underscores"
                ),
            ));
        }
        notes
    }

    /// `admin.token_file`, `metrics.token_file`, `database.url_file` (API.md §18.4): each
    /// file's one line becomes its key's value. A relative path is taken in systemd's
    /// `$CREDENTIALS_DIRECTORY` when that is set (`LoadCredential=`), else in the
    /// configuration file's directory, else in the working directory. Giving a key a value
    /// (in the file or the environment) and its file both is an error, and so is a file that cannot be read or is empty.
    pub(super) fn read_secret_files(
        &mut self,
        user: &Config,
        credentials_dir: Option<&Path>,
    ) -> Result<(), ConfigError> {
        let read = |key: &str, path: &str| -> Result<Option<String>, ConfigError> {
            if path.is_empty() {
                return Ok(None);
            }
            if user.get_string(key).is_ok_and(|v| !v.is_empty()) {
                return Err(ConfigError::Conflict {
                    key: format!("{key}_file"),
                    other: key.to_string(),
                    hint: String::new(),
                });
            }
            let mut full = PathBuf::from(path);
            if let Some(dir) = credentials_dir.filter(|_| full.is_relative()) {
                full = dir.join(full);
            }
            let text = std::fs::read_to_string(&full).map_err(|e| ConfigError::Invalid {
                key: format!("{key}_file"),
                message: format!("cannot be read ({}): {}", full.display(), e.kind()),
            })?;
            // One line: white space around it (a final newline) goes; a second line is an
            // error, not silently dropped (it may be a second secret, or a broken file).
            let line = text.trim();
            if line.is_empty() {
                return Err(ConfigError::Invalid {
                    key: format!("{key}_file"),
                    message: format!("names an empty file ({})", full.display()),
                });
            }
            if line.lines().count() > 1 {
                return Err(ConfigError::Invalid {
                    key: format!("{key}_file"),
                    message: format!(
                        "names a file of more than one line ({}); it holds the value on one line",
                        full.display()
                    ),
                });
            }
            Ok(Some(line.to_string()))
        };
        if let Some(v) = read("admin.token", &self.admin.token_file)? {
            self.admin.token = SecretString::from(v);
        }
        if let Some(v) = read("metrics.token", &self.metrics.token_file)? {
            self.metrics.token = SecretString::from(v);
        }
        if let Some(v) = read("database.url", &self.database.url_file)? {
            self.database.url = v;
        }
        Ok(())
    }
}

/// A URL with the password of its `user:password@` part and its `password=` and
/// `sslpassword=` query parameters replaced; other URLs as they are.
pub fn url_without_password(url: &str) -> String {
    // (`database.url` is always a URL: `database_location` refuses anything else.)
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The user information ends at the last `@`, whatever stands in the password (a `/`,
    // a `?` or an `@` written as it is): at worst more than the password is hidden.
    let (authority, tail) = match rest.rsplit_once('@') {
        Some((userinfo, after)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            let host_end = after.find(['/', '?']).unwrap_or(after.len());
            let (host, tail) = after.split_at(host_end);
            (format!("{user}:<redacted>@{host}"), tail)
        }
        _ => {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            (authority.to_string(), tail)
        }
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k == "password" || k == "sslpassword" => {
                        format!("{k}=<redacted>")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}
