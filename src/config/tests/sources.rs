//! A check's error names where the value came from: the file or the environment variable
//! that set the key, or the one that set the key bounding it.

use super::super::*;
use super::env;

/// The error of loading a file `c.toml` of `text` (the directory lives as long as its guard).
fn file_error(text: &str) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, text).unwrap();
    let err = Settings::load_from(Some(&p), env(&[]))
        .unwrap_err()
        .to_string();
    (dir, p, err)
}

/// The error of loading no file with only these environment variables set.
fn env_error(vars: &[(&str, &str)]) -> String {
    Settings::load_from(None, env(vars))
        .unwrap_err()
        .to_string()
}

#[test]
fn a_value_out_of_range_names_the_file_or_variable_that_set_it() {
    let (_dir, p, err) = file_error("[otp]\ncode_length = 3\n[server]\nbind = \"127.0.0.1:0\"\n");
    assert_eq!(
        err,
        format!(
            "configuration error in {}: `otp.code_length` must be between 4 and 10 (got 3)",
            p.display()
        )
    );
    // The variable wins over the file, and is the one named.
    let err = Settings::load_from(Some(&p), env(&[("OTPMINT__OTP__CODE_LENGTH", "11")]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "configuration error in environment variable OTPMINT__OTP__CODE_LENGTH: \
         `otp.code_length` must be between 4 and 10 (got 11)"
    );
    // A format check too: the file that set it.
    std::fs::write(&p, "[server]\nbind = \"0.0.0.0\"\n").unwrap();
    let err = Settings::load_from(Some(&p), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "configuration error in {}: `server.bind`",
            p.display()
        )),
        "{err}"
    );
}

#[test]
fn a_default_a_set_key_no_longer_allows_names_where_that_key_was_set() {
    let err = env_error(&[("OTPMINT__SMTP__MAX_CONNECTIONS_LIMIT", "10")]);
    assert!(
        err.starts_with(
            "configuration error in environment variable OTPMINT__SMTP__MAX_CONNECTIONS_LIMIT: \
             `smtp.max_connections_per_tenant` must be between 1 and 10 (got 32)"
        ),
        "{err}"
    );
    assert!(
        err.contains("set `smtp.max_connections_per_tenant` too"),
        "{err}"
    );
}

#[test]
fn a_secret_and_its_file_both_set_name_the_file_that_set_them() {
    let (_dir, p, err) =
        file_error("[admin]\ntoken = \"t0ken-never-shown-0123456789abcdef\"\ntoken_file = \"x\"\n");
    assert_eq!(
        err,
        format!(
            "configuration error in {}: `admin.token_file` and `admin.token` are both set; keep one",
            p.display()
        )
    );
}

/// A secret in one layer and its file (or the key and the key file) in another: the error
/// names both layers, not only one of them (from the docs audit).
#[test]
fn a_secret_and_its_file_set_in_two_layers_name_both() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[admin]\ntoken_file = \"x\"\n").unwrap();
    let err = Settings::load_from(
        Some(&p),
        env(&[("OTPMINT__ADMIN__TOKEN", "t0ken-never-shown")]),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        format!(
            "configuration error in {} and environment variable OTPMINT__ADMIN__TOKEN: \
             `admin.token_file` and `admin.token` are both set; keep one",
            p.display()
        )
    );
    std::fs::write(
        &p,
        "[crypto]\nmaster_key_file = \"/var/lib/otpmint/master.key\"\n",
    )
    .unwrap();
    let key = crate::crypto::keyring::MasterKey::generate().to_base64();
    let err = Settings::load_from(Some(&p), env(&[("OTPMINT__CRYPTO__MASTER_KEY", &key)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "configuration error in environment variable OTPMINT__CRYPTO__MASTER_KEY and {}: \
             `crypto.master_key` and `crypto.master_key_file` are both set; keep one (the key \
             file: /var/lib/otpmint/master.key; an empty crypto.master_key_file",
            p.display()
        )) && !err.contains(&key),
        "{err}"
    );
}

#[test]
fn a_list_item_out_of_its_range_names_the_list_its_range_and_its_variable() {
    let err = env_error(&[("OTPMINT__SMTP__ALLOWED_PORTS", "587,70000")]);
    assert!(
        err.starts_with(
            "configuration error in environment variable OTPMINT__SMTP__ALLOWED_PORTS:"
        ),
        "{err}"
    );
    assert!(
        err.contains("`smtp.allowed_ports` must be a list of port numbers between 1 and 65535"),
        "{err}"
    );
}

/// A list in the environment may also be written as in the file, a TOML array (found by
/// the PostgreSQL audit: `[2625]` was refused as "must be a list of port numbers"); a
/// bracketed text that is no array of strings or numbers says both forms it takes.
#[test]
fn a_list_in_the_environment_may_be_a_toml_array() {
    let s = Settings::load_from(
        None,
        env(&[
            ("OTPMINT__SMTP__ALLOWED_PORTS", "[2625]"),
            (
                "OTPMINT__SERVER__TRUSTED_PROXIES",
                r#" ["10.0.0.0/8", "::1"] "#,
            ),
            ("OTPMINT__DELIVERY__SNS_CERTIFICATE_HOSTS", "[]"),
        ]),
    )
    .unwrap();
    assert_eq!(s.smtp.allowed_ports, vec![2625]);
    assert_eq!(s.server.trusted_proxies, ["10.0.0.0/8", "::1"]);
    assert!(s.delivery.sns_certificate_hosts.is_empty());
    let s = Settings::load_from(
        None,
        env(&[("OTPMINT__SMTP__ALLOWED_PORTS", "[587, 2525]")]),
    )
    .unwrap();
    assert_eq!(s.smtp.allowed_ports, vec![587, 2525]);
    for bad in ["[587, ", "[[587]]", "[true]", "[\"x\"]"] {
        let err = Settings::load_from(None, env(&[("OTPMINT__SMTP__ALLOWED_PORTS", bad)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OTPMINT__SMTP__ALLOWED_PORTS") && err.contains("`smtp.allowed_ports`"),
            "{bad}: {err}"
        );
    }
    let err = Settings::load_from(None, env(&[("OTPMINT__SMTP__ALLOWED_PORTS", "[587,")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("comma-separated (`587,2525`) or a TOML array"),
        "{err}"
    );
    // Also where the default is an empty list (no item type to check): refused, not
    // taken as empty (the review: `[10.0.0.0/8]` unquoted left no trusted proxy).
    for key in LIST_KEYS {
        let var = format!("OTPMINT__{}", key.to_ascii_uppercase().replace('.', "__"));
        let err = Settings::load_from(None, env(&[(var.as_str(), "[10.0.0.0/8]")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&var) && err.contains("or a TOML array") && !err.contains("10.0.0.0"),
            "{key}: {err}"
        );
    }
}
