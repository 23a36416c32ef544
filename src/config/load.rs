//! Loading the layers (embedded defaults, the file, `OTPMINT__…` variables), where the
//! database lives, and the redacted view `otpmint config` prints.

use std::path::{Path, PathBuf};

use config::{Config, File, FileFormat};

use super::*;

impl Settings {
    /// Load the layers: embedded defaults, then `file` (if any), then `OTPMINT__*` variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            let name = path.display().to_string();
            if !path.is_file() {
                let message = if path.is_dir() {
                    "is a directory, not a configuration file"
                } else {
                    "file not found"
                };
                return Err(ConfigError::Load {
                    source_name: name,
                    message: message.into(),
                });
            }
            // Each value of its key's type, checked on the text as written (API.md §3).
            if let Ok(text) = std::fs::read_to_string(path) {
                typed::check_file(&text).map_err(|m| ConfigError::Load {
                    source_name: name.clone(),
                    message: format!("`{}` {}", m.key, m.message),
                })?;
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
            // Deserialize this layer alone first, so an error names the file.
            let cfg = builder.build_cloned().map_err(|e| ConfigError::Load {
                source_name: name.clone(),
                message: without_values(e.to_string()),
            })?;
            cfg.try_deserialize::<Settings>()
                .map_err(|e| ConfigError::Load {
                    source_name: name.clone(),
                    message: explained(without_values(e.to_string())).1,
                })?;
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        // Where a relative `*_file` is read: systemd's credentials when it sets them, else
        // beside the configuration file (so the CLI run as root from any directory reads
        // what the service reads), else the working directory.
        let credentials_dir = env
            .iter()
            .find(|(n, _)| n == "CREDENTIALS_DIRECTORY")
            .map(|(_, v)| PathBuf::from(v))
            .or_else(|| {
                file.and_then(Path::parent)
                    .filter(|d| !d.as_os_str().is_empty())
                    .map(Path::to_path_buf)
            });
        // The same layers without the defaults: which keys a person set.
        let mut user = Config::builder();
        if let Some(path) = file {
            user = user.add_source(File::from(path).format(FileFormat::Toml));
        }
        let mut env_names = Vec::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let list = typed::check_env(&key, &value).map_err(|message| ConfigError::Load {
                source_name: format!("environment variable {name}"),
                message: format!("`{key}` {message}"),
            })?;
            // Values go in as strings (a secret "0123" stays "0123"); serde converts
            // numbers and booleans, and lists come split from the check.
            let result = match list {
                Some(items) => builder.set_override(key.as_str(), items),
                None => builder.set_override(key.as_str(), value.clone()),
            };
            builder = result.map_err(|e| ConfigError::Load {
                source_name: format!("environment variable {name}"),
                message: without_values(e.to_string()),
            })?;
            user = user
                .set_override(key.as_str(), value.as_str())
                .map_err(|e| ConfigError::Load {
                    source_name: format!("environment variable {name}"),
                    message: without_values(e.to_string()),
                })?;
            env_names.push((key, name));
        }
        let user = user.build().map_err(|e| ConfigError::Load {
            source_name: "configuration".into(),
            message: without_values(e.to_string()),
        })?;
        let mut settings: Settings =
            builder
                .build()
                .and_then(|c| c.try_deserialize())
                .map_err(|e| {
                    let (key, message) = explained(without_values(e.to_string()));
                    // The key at fault: an unknown one is the field the message names, in
                    // the table it names.
                    let unknown = message
                        .strip_prefix("unknown field `")
                        .and_then(|rest| rest.split_once('`'))
                        .map(|(field, _)| match &key {
                            Some(table) => format!("{table}.{field}"),
                            None => field.to_string(),
                        });
                    // The variable that set the key at fault, when one did.
                    // A list item's key (`smtp.allowed_ports[0]`) is its list's.
                    let set_by = unknown
                        .or(key)
                        .map(|k| k.split('[').next().unwrap_or_default().to_string())
                        .and_then(|k| env_names.iter().find(|(key, _)| *key == k));
                    let source_name = match set_by {
                        Some((_, name)) => format!("environment variable {name}"),
                        None if env_names.is_empty() => "built-in defaults".into(),
                        None => {
                            let names: Vec<&str> =
                                env_names.iter().map(|(_, n)| n.as_str()).collect();
                            format!("environment ({})", names.join(", "))
                        }
                    };
                    ConfigError::Load {
                        source_name,
                        message,
                    }
                })?;
        settings
            .read_secret_files(&user, credentials_dir.as_deref())
            .and_then(|()| settings.validate())
            .map_err(|e| where_set(e, file, &env_names))?;
        Ok(settings)
    }

    /// `server.bind` alone, from the same layers (`env`: the process's environment, or a
    /// test's): what `otpmint healthcheck` needs, without the checks a server's start makes
    /// on the rest (a secret file the running server read at its start and has since changed
    /// is no reason to call the server unhealthy).
    pub fn bind_only(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<String, ConfigError> {
        let failed = |source_name: String| {
            move |e: config::ConfigError| ConfigError::Load {
                source_name,
                message: without_values(e.to_string()),
            }
        };
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Load {
                    source_name: path.display().to_string(),
                    message: "file not found".into(),
                });
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        for (name, value) in env {
            // The key of a variable as `load_from` makes it.
            let bind = name
                .strip_prefix(ENV_PREFIX)
                .is_some_and(|rest| rest.to_ascii_lowercase().replace("__", ".") == "server.bind");
            if bind {
                builder = builder
                    .set_override("server.bind", value)
                    .map_err(failed(format!("environment variable {name}")))?;
            }
        }
        let name = file.map_or("configuration".into(), |p| p.display().to_string());
        builder
            .build()
            .and_then(|c| c.get_string("server.bind"))
            .map_err(failed(name))
    }

    /// Where the database URL came from, for messages: `database.url`, or
    /// `database.url_file` and its path.
    pub fn database_url_source(&self) -> String {
        match self.database.url_file.as_str() {
            "" => "database.url".into(),
            file => format!("database.url_file {file}"),
        }
    }

    /// `database.url` parsed: `sqlite://rel/path.db`, `sqlite:///abs/path.db`, or
    /// `postgres://…` / `postgresql://…` (checked further when connecting).
    pub fn database_location(&self) -> Result<DatabaseLocation, ConfigError> {
        let url = self.database.url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseLocation::Postgres(url.to_string()));
        }
        // A URL read from `database.url_file` is named by that file (API.md §3: where it
        // came from).
        let refuse = |what: &str| {
            let from_file = &self.database.url_file;
            if from_file.is_empty() {
                ConfigError::Invalid {
                    key: "database.url".into(),
                    message: what.into(),
                }
            } else {
                ConfigError::Invalid {
                    key: "database.url_file".into(),
                    message: format!("({from_file}) holds a URL that {what}"),
                }
            }
        };
        let Some(rest) = url.strip_prefix("sqlite://") else {
            return Err(refuse(
                "must start with sqlite://, postgres:// or postgresql://",
            ));
        };
        if rest.is_empty() || rest == "/" {
            return Err(refuse("names no file"));
        }
        // Not file names, though they would become one (found by the configuration audit:
        // `sqlite://x.db?mode=rwc`, a common form elsewhere, made a new, empty installation
        // in a file named so).
        if rest.contains('?') {
            return Err(refuse(
                "has a query (`?…`): a SQLite URL takes no options here; name the file alone",
            ));
        }
        if rest == ":memory:" || rest.starts_with("file:") {
            return Err(refuse(
                "names an in-memory database or a SQLite URI (`file:`): name the file alone",
            ));
        }
        Ok(DatabaseLocation::Sqlite(PathBuf::from(rest)))
    }

    pub fn max_hashing_threads(&self) -> usize {
        if self.hashing.max_concurrent == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.hashing.max_concurrent
        }
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn redacted_toml(&self) -> String {
        toml_like(&serde_json::to_value(self).unwrap_or_default())
    }
}

fn toml_like(v: &serde_json::Value) -> String {
    let mut out = String::new();
    if let serde_json::Value::Object(sections) = v {
        for (name, section) in sections {
            out.push_str(&format!("[{name}]\n"));
            if let serde_json::Value::Object(keys) = section {
                for (k, val) in keys {
                    let redacted =
                        |v: &serde_json::Value| v.as_str().is_some_and(|s| s.contains(REDACTED));
                    // Set by its `_file` key: the file is what a read-back must use.
                    let from_file = !val.as_str().is_some_and(str::is_empty)
                        && keys
                            .get(&format!("{k}_file"))
                            .and_then(|f| f.as_str())
                            .is_some_and(|f| !f.is_empty());
                    match val {
                        // A secret (or a URL holding one) is shown as a comment: read back,
                        // the file must not hold the word as the secret.
                        v if redacted(v)
                            || v.as_array().is_some_and(|a| a.iter().any(redacted)) =>
                        {
                            out.push_str(&format!(
                                "# {k} = {} (holds a secret: not shown)\n",
                                toml_value(v)
                            ))
                        }
                        _ if from_file => out.push_str(&format!("# {k} = (read from {k}_file)\n")),
                        serde_json::Value::Null => out.push_str(&format!("# {k} = (not set)\n")),
                        _ => out.push_str(&format!("{} = {}\n", toml_key(k), toml_value(val))),
                    }
                }
            }
            out.push('\n');
        }
    }
    out
}

fn toml_key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        k.to_string()
    } else {
        serde_json::Value::String(k.to_string()).to_string()
    }
}

/// A value in TOML: JSON's strings, numbers and booleans are TOML's too; a map is an inline
/// table, a list an array.
fn toml_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{} = {}", toml_key(k), toml_value(v)))
                .collect();
            if items.is_empty() {
                "{}".into()
            } else {
                format!("{{ {} }}", items.join(", "))
            }
        }
        serde_json::Value::Array(a) => {
            let items: Vec<String> = a.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// The keys a check holds another key to, where the first's default can fall outside what a
/// value of the second allows: an error on the first while only the second was set names
/// where the second was set. (`hashing.memory_kib`'s default is at least 8 × any
/// `hashing.parallelism`, and `limits.per_ip_burst`'s is never 0.)
const BOUNDED_BY: [(&str, &str); 2] = [
    (
        "smtp.max_connections_per_tenant",
        "smtp.max_connections_limit",
    ),
    ("smtp.initial_connections", "smtp.max_connections_limit"),
];

/// Where `key` was set: its environment variable, else the file (as its loading errors name
/// them); `None` when it keeps its default.
fn set_in(key: &str, file: Option<&Path>, env_names: &[(String, String)]) -> Option<String> {
    if let Some((_, name)) = env_names.iter().find(|(k, _)| k == key) {
        return Some(format!("environment variable {name}"));
    }
    let path = file?;
    Config::builder()
        .add_source(File::from(path).format(FileFormat::Toml))
        .build()
        .is_ok_and(|c| c.get::<config::Value>(key).is_ok())
        .then(|| path.display().to_string())
}

/// A check's error with the layer that set its key, as the loading errors name theirs; a key
/// that keeps its default but is bounded by one that was set names that one's layer; else the
/// plain form.
fn where_set(e: ConfigError, file: Option<&Path>, env_names: &[(String, String)]) -> ConfigError {
    let (key, message) = match e {
        ConfigError::Invalid { key, message } => (key, message),
        // Both keys' layers: the file for one and a variable for the other, say.
        ConfigError::Conflict { key, other, hint } => {
            let mut layers: Vec<String> = Vec::new();
            for k in [&key, &other] {
                if let Some(layer) = set_in(k, file, env_names) {
                    if !layers.contains(&layer) {
                        layers.push(layer);
                    }
                }
            }
            if layers.is_empty() {
                return ConfigError::Conflict { key, other, hint };
            }
            return ConfigError::Load {
                source_name: layers.join(" and "),
                message: format!("`{key}` and `{other}` are both set; keep one{hint}"),
            };
        }
        e => return e,
    };
    let (source_name, message) = match set_in(&key, file, env_names) {
        Some(source) => (source, format!("`{key}` {message}")),
        None => {
            let bound = BOUNDED_BY
                .iter()
                .filter(|(k, _)| *k == key)
                .find_map(|(_, by)| Some((*by, set_in(by, file, env_names)?)));
            let Some((by, source)) = bound else {
                return ConfigError::Invalid { key, message };
            };
            let message = format!(
                "`{key}` {message}: it keeps its default, which `{by}` set here no longer \
                 allows; set `{key}` too"
            );
            (source, message)
        }
    };
    ConfigError::Load {
        source_name,
        message,
    }
}
