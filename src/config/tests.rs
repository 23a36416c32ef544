//! Tests of the settings: layering, validation, redaction of secrets in errors, and that
//! docs/configuration.md lists every key.

use super::*;

mod secrets;
mod sources;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn defaults_load_and_validate() {
    let s = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(s.server.bind, "127.0.0.1:8080");
    assert_eq!(s.otp.code_length, 6);
    assert_eq!(s.registration.mode, RegistrationMode::Admin);
    assert_eq!(s.smtp.allowed_ports, vec![465, 587, 2525]);
}

#[test]
fn env_overrides_keep_secrets_as_strings_and_split_lists() {
    let s = Settings::load_from(
        None,
        env(&[
            ("OTPMINT__ADMIN__TOKEN", "0123"),
            ("OTPMINT__SMTP__ALLOWED_PORTS", "587, 2525"),
            ("OTPMINT__OTP__TTL_SECONDS", "60"),
            ("OTPMINT__SMTP__ALLOW_PLAINTEXT", "true"),
        ]),
    )
    .unwrap();
    assert_eq!(s.admin.token.expose_secret(), "0123");
    assert_eq!(s.smtp.allowed_ports, vec![587, 2525]);
    assert_eq!(s.otp.ttl_seconds, 60);
    assert!(s.smtp.allow_plaintext);
}

/// Every list-valued key takes a comma-separated environment value (API.md §3): the keys
/// whose default is a list are exactly the ones split.
#[test]
fn every_list_key_is_split_from_the_environment() {
    let s = Settings::load_from(None, env(&[])).unwrap();
    let mut lists = Vec::new();
    if let Ok(serde_json::Value::Object(sections)) = serde_json::to_value(&s) {
        for (section, v) in sections {
            if let serde_json::Value::Object(keys) = v {
                for (key, val) in keys {
                    if val.is_array() {
                        lists.push(format!("{section}.{key}"));
                    }
                }
            }
        }
    }
    // Secrets serialize as strings; the one list of them is named here.
    lists.push("crypto.previous_master_keys".into());
    lists.sort();
    lists.dedup();
    let mut split: Vec<String> = LIST_KEYS.iter().map(|k| k.to_string()).collect();
    split.sort();
    assert_eq!(lists, split);
    let s = Settings::load_from(
        None,
        env(&[(
            "OTPMINT__DELIVERY__SNS_CERTIFICATE_HOSTS",
            "sns.example.test, certs.example.test",
        )]),
    )
    .unwrap();
    assert_eq!(
        s.delivery.sns_certificate_hosts,
        ["sns.example.test", "certs.example.test"]
    );
}

#[test]
fn unknown_env_key_is_named() {
    let err = Settings::load_from(None, env(&[("OTPMINT__SERVER__BND", "x")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bnd"), "{err}");
    assert!(err.contains("OTPMINT__SERVER__BND"), "{err}");
}

#[test]
fn an_unknown_choice_names_its_variable_and_lists_the_choices() {
    let err = Settings::load_from(
        None,
        env(&[
            (
                "OTPMINT__ADMIN__TOKEN",
                "a-token-long-enough-for-no-warning-000",
            ),
            ("OTPMINT__REGISTRATION__MODE", "public"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("environment variable OTPMINT__REGISTRATION__MODE")
            && !err.contains("OTPMINT__ADMIN__TOKEN"),
        "only the variable at fault: {err}"
    );
    assert!(
        err.contains("`registration.mode` must be one of open, admin, closed"),
        "{err}"
    );
    let err = Settings::load_from(None, env(&[("OTPMINT__HASHING__ALGORITHM", "sha1")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("argon2id, hmac-sha256"), "{err}");
    assert!(!err.contains("variant constructor"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[log]\nformat = \"xml\"\n").unwrap();
    let err = Settings::load_from(Some(&p), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("c.toml") && err.contains("`log.format` must be one of auto, json, pretty"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_among_several_variables_names_the_one_that_set_it() {
    let err = Settings::load_from(
        None,
        env(&[
            ("OTPMINT__SERVER__BIND", "127.0.0.1:1"),
            ("OTPMINT__LOG__LEVEL", "info"),
            ("OTPMINT__SERVER__BOGUS", "1"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("environment variable OTPMINT__SERVER__BOGUS") && !err.contains("LOG__LEVEL"),
        "{err}"
    );
}

#[test]
fn unknown_file_key_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[otp]\nttl = 5\n").unwrap();
    let err = Settings::load_from(Some(&p), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ttl"), "{err}");
    assert!(err.contains("c.toml"), "{err}");
}

#[test]
fn a_key_set_twice_is_named_with_its_line_and_never_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    for (text, key, line) in [
        (
            "[admin]\ntoken = \"first-secret-0123456789\"\ntoken = \"second-secret-0123456789\"\n",
            "`admin.token`",
            3,
        ),
        (
            "[server]\nbind = \"127.0.0.1:1\"\n[log]\n[server]\n",
            "`server`",
            4,
        ),
        (
            "[delivery]\nprovider_base_urls = {postmark = \"https://secret@x\", postmark = \"y\"}\n",
            "`postmark`",
            2,
        ),
        ("[log]\nx.y = \"secret-a\"\nx.y = \"secret-b\"\n", "`y`", 3),
    ] {
        std::fs::write(&p, text).unwrap();
        let err = Settings::load_from(Some(&p), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml") && err.contains(key), "{err}");
        assert!(
            err.contains(&format!("set twice (again on line {line})")),
            "{err}"
        );
        assert!(
            !err.contains("secret") && !err.contains("127.0.0.1"),
            "{err}"
        );
    }
}

#[test]
fn a_value_of_the_wrong_type_is_refused_not_converted_naming_key_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[smtp]\nallow_private_hosts = \"yes\"\n").unwrap();
    let err = Settings::load_from(Some(&p), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("c.toml") && err.contains("`smtp.allow_private_hosts` must be a boolean"),
        "{err}"
    );
    std::fs::write(&p, "[limits]\nper_ip_per_second = 18446744073709551615\n").unwrap();
    let err = Settings::load_from(Some(&p), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`limits.per_ip_per_second`"), "{err}");
    assert!(!err.contains("18446744073709551615"), "{err}");
    // Its range, as for any other value outside it (API.md §6.31).
    assert!(err.contains("must be a whole number between"), "{err}");
    let err = Settings::load_from(None, env(&[("OTPMINT__COMPAT__OTPMINT", "yes")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("OTPMINT__COMPAT__OTPMINT") && err.contains("true or false"),
        "{err}"
    );
    let s = Settings::load_from(None, env(&[("OTPMINT__COMPAT__OTPMINT", "false")])).unwrap();
    assert!(!s.compat.otpmint);
}

#[test]
fn sns_certificate_hosts_hold_host_names_only() {
    for bad in [
        "https://bad host/",
        "sns.example.test:443",
        "sns.example.test/x",
    ] {
        let err = Settings::load_from(
            None,
            env(&[("OTPMINT__DELIVERY__SNS_CERTIFICATE_HOSTS", bad)]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("delivery.sns_certificate_hosts"),
            "{bad}: {err}"
        );
    }
    let s = Settings::load_from(
        None,
        env(&[(
            "OTPMINT__DELIVERY__SNS_CERTIFICATE_HOSTS",
            "127.0.0.1,sns.example.test",
        )]),
    )
    .unwrap();
    assert_eq!(s.delivery.sns_certificate_hosts.len(), 2);
}

#[test]
fn out_of_range_is_refused_with_key() {
    let err = Settings::load_from(None, env(&[("OTPMINT__OTP__CODE_LENGTH", "12")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("otp.code_length"), "{err}");
}

#[test]
fn database_url_forms() {
    let mut s = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(
        s.database_location().unwrap(),
        DatabaseLocation::Sqlite(PathBuf::from("data/otpmint.db"))
    );
    s.database.url = "sqlite:///var/lib/o.db".into();
    assert_eq!(
        s.database_location().unwrap(),
        DatabaseLocation::Sqlite(PathBuf::from("/var/lib/o.db"))
    );
    s.database.url = "mysql://x".into();
    assert!(s.database_location().is_err());
    // Options and an in-memory database are not files (found by the configuration audit:
    // each became a file's name, a new empty installation).
    for (url, says) in [
        ("sqlite://x.db?mode=rwc", "has a query"),
        ("sqlite://:memory:", "in-memory"),
        ("sqlite://file::memory:", "SQLite URI"),
        ("sqlite://file:x.db", "SQLite URI"),
    ] {
        let err = Settings::load_from(None, env(&[("OTPMINT__DATABASE__URL", url)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("database.url") && err.contains(says),
            "{url}: {err}"
        );
    }
}

/// Every key of the embedded defaults appears in docs/configuration.md with its env name.
#[test]
fn docs_list_every_key() {
    let docs = include_str!("../../docs/configuration.md");
    let mut section = String::new();
    let mut keys = 0;
    for line in DEFAULT_TOML.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line
                .trim_matches(['[', ']'])
                .split(']')
                .next()
                .unwrap_or("")
                .to_string();
        } else if let Some((key, _)) = line.split_once('=') {
            if line.starts_with('#') {
                continue;
            }
            let key = key.trim();
            let full = format!("`{section}.{key}`");
            let env = format!(
                "`OTPMINT__{}__{}`",
                section.to_uppercase(),
                key.to_uppercase()
            );
            assert!(docs.contains(&full), "docs/configuration.md lacks {full}");
            assert!(docs.contains(&env), "docs/configuration.md lacks {env}");
            assert!(
                DEFAULT_TOML.contains(&env[1..env.len() - 1]),
                "config/default.toml does not name {env}"
            );
            keys += 1;
        }
    }
    assert!(keys > 30, "parsed only {keys} keys");
}

/// A number its key's type cannot hold (past 32 bits, negative, not a number), from the
/// environment or a file, is refused naming the key and the range it is checked against.
#[test]
fn numbers_their_type_cannot_hold_are_refused_naming_key_and_range() {
    for value in ["4294967296", "-5", "abc", "99999999999999999999999"] {
        let err = Settings::load_from(None, env(&[("OTPMINT__OTP__TTL_SECONDS", value)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("otp.ttl_seconds"), "{value}: {err}");
        assert!(err.contains("between 1 and 86400"), "{value}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[limits]\nrecipient_max_failures = 4294967296\n").unwrap();
    let err = Settings::load_from(Some(&file), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.recipient_max_failures"), "{err}");
    assert!(err.contains("between 0 and 1000000"), "{err}");
    // Keys bounded by another setting name it, from the file and from the environment.
    for key in ["max_connections_per_tenant", "initial_connections"] {
        std::fs::write(&file, format!("[smtp]\n{key} = 9223372036854775807\n")).unwrap();
        let from_file = Settings::load_from(Some(&file), env(&[])).unwrap_err();
        let var = format!("OTPMINT__SMTP__{}", key.to_uppercase());
        let from_env = Settings::load_from(None, env(&[(&var, "99999999999999999999999")]));
        for err in [from_file.to_string(), from_env.unwrap_err().to_string()] {
            assert!(err.contains(&format!("smtp.{key}")), "{err}");
            assert!(
                err.contains("between 1 and `smtp.max_connections_limit` (at most 4096)"),
                "{err}"
            );
        }
    }
}

#[test]
fn numbers_that_could_overflow_time_arithmetic_are_refused_naming_key_and_range() {
    for (var, value, key) in [
        (
            "OTPMINT__LIMITS__RECIPIENT_WINDOW_SECONDS",
            "9223372036854775",
            "limits.recipient_window_seconds",
        ),
        (
            "OTPMINT__LIMITS__RESEND_COOLDOWN_SECONDS",
            "10000000000000000",
            "limits.resend_cooldown_seconds",
        ),
        (
            "OTPMINT__LIMITS__TENANT_MAX_SENDS_PER_HOUR",
            "4000000000",
            "limits.tenant_max_sends_per_hour",
        ),
        (
            "OTPMINT__AUDIT__RETENTION_SECONDS",
            "18446744073709551615",
            "audit.retention_seconds",
        ),
        (
            "OTPMINT__SERVER__SHUTDOWN_GRACE_SECONDS",
            "99999999",
            "server.shutdown_grace_seconds",
        ),
        (
            "OTPMINT__SMTP__INITIAL_CONNECTIONS",
            "0",
            "smtp.initial_connections",
        ),
        (
            "OTPMINT__WEBHOOKS__MAX_IN_FLIGHT_PER_TENANT",
            "100000",
            "webhooks.max_in_flight_per_tenant",
        ),
    ] {
        let err = Settings::load_from(None, env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{var}: {err}");
        assert!(err.contains("must be between"), "{var}: {err}");
    }
    let err = Settings::load_from(
        None,
        env(&[
            ("OTPMINT__LIMITS__PER_IP_BURST", "0"),
            ("OTPMINT__LIMITS__PER_IP_PER_SECOND", "10"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("limits.per_ip_burst"), "{err}");
}

#[test]
fn the_log_format_is_auto_by_default() {
    let s = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(s.log.format, LogFormat::Auto);
    let s = Settings::load_from(None, env(&[("OTPMINT__LOG__FORMAT", "json")])).unwrap();
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn start_notes_name_an_off_admin_api_a_short_token_and_stray_variables() {
    let s = Settings::load_from(None, env(&[])).unwrap();
    let notes = s.start_notes(env(&[
        ("OTPMINT_ADMIN__TOKEN", "secret-value-1"),
        ("OTPMINT__LOG__LEVEL", "info"),
        ("OTPMINT_TEST_POSTGRES_URL", "x"),
        ("OTPMINT_CONFIG", "/etc/otpmint/config.toml"),
        ("PATH", "/bin"),
    ]));
    let text: Vec<&str> = notes.iter().map(|(_, n)| n.as_str()).collect();
    assert!(text[0].contains("admin API is off"), "{text:?}");
    assert_eq!(notes.len(), 2, "{text:?}");
    assert!(
        notes[1].0 && text[1].contains("OTPMINT_ADMIN__TOKEN") && !text[1].contains("secret-value")
    );
    let s = Settings::load_from(None, env(&[("OTPMINT__ADMIN__TOKEN", "short")])).unwrap();
    let notes = s.start_notes(env(&[]));
    assert!(
        notes.len() == 1 && notes[0].0 && notes[0].1.contains("shorter than 32"),
        "{notes:?}"
    );
    let s = Settings::load_from(None, env(&[("OTPMINT__ADMIN__TOKEN", &"x".repeat(40))])).unwrap();
    assert!(s.start_notes(env(&[])).is_empty());
    // An empty list of relay ports (found by the configuration audit: accepted without a
    // word, and no relay could be reached).
    let s = Settings::load_from(
        None,
        env(&[
            ("OTPMINT__ADMIN__TOKEN", &"x".repeat(40)),
            ("OTPMINT__SMTP__ALLOWED_PORTS", ""),
        ]),
    )
    .unwrap();
    assert!(s.smtp.allowed_ports.is_empty());
    let notes = s.start_notes(env(&[]));
    assert!(
        notes.len() == 1 && notes[0].0 && notes[0].1.contains("smtp.allowed_ports is empty"),
        "{notes:?}"
    );
}

/// A bad URL read from `database.url_file` is named by that key and its file, not as
/// `database.url` (found by a black-box audit: the operator looked in the wrong place).
#[test]
fn a_bad_url_from_its_file_is_named_by_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db-url");
    std::fs::write(&file, "mysql://db.internal/otp\n").unwrap();
    let path = file.display().to_string();
    let err = Settings::load_from(None, env(&[("OTPMINT__DATABASE__URL_FILE", &path)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`database.url_file`") && err.contains(&path) && err.contains("sqlite://"),
        "{err}"
    );
    let err = Settings::load_from(None, env(&[("OTPMINT__DATABASE__URL", "mysql://x")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`database.url`"), "{err}");
}

/// `--config` naming a directory says so, not "file not found" (found by a black-box audit).
#[test]
fn a_directory_given_as_the_configuration_file_is_named_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = Settings::load_from(Some(dir.path()), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is a directory"), "{err}");
    let missing = dir.path().join("nope.toml");
    let err = Settings::load_from(Some(&missing), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("file not found"), "{err}");
}
