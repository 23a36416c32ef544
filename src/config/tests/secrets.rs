//! Secrets in the configuration: inline or from files, never both, never shown — in
//! errors, in the redacted configuration `config check` prints, or in a database URL.

use super::super::*;
use super::env;
use secrecy::ExposeSecret;

#[test]
fn both_master_key_and_file_is_an_error() {
    let err = Settings::load_from(
        None,
        env(&[
            (
                "OTPMINT__CRYPTO__MASTER_KEY",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
            ("OTPMINT__CRYPTO__MASTER_KEY_FILE", "/tmp/x.key"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("crypto.master_key"), "{err}");
}

#[test]
fn a_type_error_on_a_secret_does_not_print_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        "[crypto]\nprevious_master_keys = \"c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw==\"\n",
    )
    .unwrap();
    let err = Settings::load_from(Some(&p), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(!err.contains("c2VjcmV0"), "{err}");
    assert!(
        err.contains("previous_master_keys") || err.contains("sequence"),
        "{err}"
    );
}

#[test]
fn a_syntax_error_in_a_single_quoted_secret_does_not_print_it() {
    let dir = tempfile::tempdir().unwrap();
    for text in [
        "[admin]\ntoken = 'sekrit-token-value-123\n",
        "[admin]\ntoken = \"sekrit-token-value-123\n",
        "[admin]\ntoken = 'sekrit-token-value-123' x\n",
        "[admin]\ntoken = '''sekrit-token-value-123\n",
    ] {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        let err = Settings::load_from(Some(&p), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("sekrit"), "{err}");
        assert!(err.contains("c.toml"), "{err}");
    }
}

#[test]
fn secret_files_give_their_one_line_and_refuse_both_an_empty_file_or_a_second_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin");
    std::fs::write(&file, " from-the-file-0123\r\n\n").unwrap();
    let path = file.display().to_string();
    let s = Settings::load_from(None, env(&[("OTPMINT__ADMIN__TOKEN_FILE", &path)])).unwrap();
    assert_eq!(s.admin.token.expose_secret(), "from-the-file-0123");
    // Relative paths are taken in systemd's credentials directory.
    let dir_s = dir.path().display().to_string();
    let s = Settings::load_from(
        None,
        env(&[
            ("OTPMINT__METRICS__TOKEN_FILE", "admin"),
            ("CREDENTIALS_DIRECTORY", &dir_s),
        ]),
    )
    .unwrap();
    assert_eq!(s.metrics.token.expose_secret(), "from-the-file-0123");
    // Without systemd, beside the configuration file (the CLI run from anywhere).
    let conf = dir.path().join("config.toml");
    std::fs::write(&conf, "[admin]\ntoken_file = \"admin\"\n").unwrap();
    let s = Settings::load_from(Some(&conf), env(&[])).unwrap();
    assert_eq!(s.admin.token.expose_secret(), "from-the-file-0123");
    // Both a key and its file, from any layers: an error naming the key, never the value.
    let both = Settings::load_from(
        None,
        env(&[
            ("OTPMINT__ADMIN__TOKEN_FILE", &path),
            ("OTPMINT__ADMIN__TOKEN", "inline-secret-token"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        both.contains("admin.token_file") && both.contains("both set"),
        "{both}"
    );
    assert!(
        !both.contains("inline-secret") && !both.contains("from-the-file"),
        "{both}"
    );
    let toml = dir.path().join("c.toml");
    std::fs::write(&toml, "[database]\nurl = \"sqlite://x.db\"\n").unwrap();
    let url_file = dir.path().join("url");
    std::fs::write(&url_file, "sqlite:///tmp/y.db\n").unwrap();
    let url_path = url_file.display().to_string();
    assert!(Settings::load_from(
        Some(&toml),
        env(&[("OTPMINT__DATABASE__URL_FILE", &url_path)])
    )
    .is_err());
    let s = Settings::load_from(None, env(&[("OTPMINT__DATABASE__URL_FILE", &url_path)])).unwrap();
    assert_eq!(s.database.url, "sqlite:///tmp/y.db");
    // Missing and empty files, and a second line (never silently dropped).
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    std::fs::write(dir.path().join("two"), "token-one-0123\ntoken-two-4567\n").unwrap();
    for name in ["missing", "empty", "two"] {
        let p = dir.path().join(name).display().to_string();
        let e = Settings::load_from(None, env(&[("OTPMINT__ADMIN__TOKEN_FILE", &p)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin.token_file") && e.contains(name), "{e}");
        assert!(!e.contains("token-one") && !e.contains("token-two"), "{e}");
    }
}

#[test]
fn a_database_url_is_shown_without_its_password_and_empty_variables_are_unset() {
    assert_eq!(
        url_without_password("postgres://otp:s3cret@db.example:5432/otp?sslmode=require"),
        "postgres://otp:<redacted>@db.example:5432/otp?sslmode=require"
    );
    assert_eq!(
        url_without_password("postgres://db/otp"),
        "postgres://db/otp"
    );
    assert_eq!(
        url_without_password("sqlite://data/x.db"),
        "sqlite://data/x.db"
    );
    assert_eq!(
        url_without_password("postgres://otp@db/otp?sslmode=require&password=s3cret"),
        "postgres://otp@db/otp?sslmode=require&password=<redacted>"
    );
    // A password with a `/`, a `?` or an `@` written as it is, which the driver takes.
    for pw in ["s3/cret", "s3?cret", "s3@cret", "s3:c/r?e@t"] {
        let shown =
            url_without_password(&format!("postgres://otp:{pw}@db:5432/otp?sslmode=disable"));
        assert_eq!(
            shown, "postgres://otp:<redacted>@db:5432/otp?sslmode=disable",
            "{pw}"
        );
    }
    let s = Settings::load_from(
        None,
        env(&[("OTPMINT__DATABASE__URL", "postgres://otp:s3cret@db/otp")]),
    )
    .unwrap();
    let shown = s.redacted_toml();
    assert!(
        !shown.contains("s3cret") && shown.contains("otp:<redacted>@db/otp"),
        "{shown}"
    );
    // An empty OTPMINT__ADMIN__TOKEN (compose files) beside a token file is not "both".
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t");
    std::fs::write(&file, "from-file-token-0123456789\n").unwrap();
    let path = file.display().to_string();
    let s = Settings::load_from(
        None,
        env(&[
            ("OTPMINT__ADMIN__TOKEN", ""),
            ("OTPMINT__ADMIN__TOKEN_FILE", &path),
        ]),
    )
    .unwrap();
    assert_eq!(s.admin.token.expose_secret(), "from-file-token-0123456789");
}

#[test]
fn the_shown_configuration_reads_back_as_toml_without_its_secrets() {
    let token = "t".repeat(40);
    let s = Settings::load_from(
        None,
        env(&[
            ("OTPMINT__ADMIN__TOKEN", token.as_str()),
            (
                "OTPMINT__DELIVERY__PROVIDER_BASE_URLS__POSTMARK",
                "https://pm.example:8443",
            ),
        ]),
    )
    .unwrap();
    let shown = s.redacted_toml();
    assert!(!shown.contains(&token), "{shown}");
    let dir = tempfile::tempdir().unwrap();
    // A URL read from its file, with a password: neither is written as a live value.
    let url_file = dir.path().join("url");
    std::fs::write(&url_file, "postgres://otp:s3cret@db/otp\n").unwrap();
    let with_file = Settings::load_from(
        None,
        env(&[
            ("OTPMINT__DATABASE__URL", ""),
            (
                "OTPMINT__DATABASE__URL_FILE",
                &url_file.display().to_string(),
            ),
        ]),
    )
    .unwrap()
    .redacted_toml();
    assert!(!with_file.contains("s3cret"), "{with_file}");
    let back_file = dir.path().join("with-file.toml");
    std::fs::write(&back_file, &with_file).unwrap();
    let back = Settings::load_from(Some(&back_file), env(&[]))
        .unwrap_or_else(|e| panic!("{e}\n{with_file}"));
    assert_eq!(
        back.database.url, "postgres://otp:s3cret@db/otp",
        "the file is read again"
    );
    let file = dir.path().join("shown.toml");
    std::fs::write(&file, &shown).unwrap();
    let back =
        Settings::load_from(Some(&file), env(&[])).unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert_eq!(
        back.delivery
            .provider_base_urls
            .get("postmark")
            .map(String::as_str),
        Some("https://pm.example:8443")
    );
    // A secret that is not shown is not read back as the word that stands for it.
    assert!(back.admin.token.expose_secret().is_empty(), "{shown}");
}

#[test]
fn an_empty_master_key_file_leaves_the_file_out() {
    let key = crate::crypto::keyring::MasterKey::generate().to_base64();
    // The container image sets the file; an empty value gives way to the inline key.
    let s = Settings::load_from(
        None,
        env(&[
            ("OTPMINT__CRYPTO__MASTER_KEY", key.as_str()),
            ("OTPMINT__CRYPTO__MASTER_KEY_FILE", ""),
        ]),
    );
    assert!(s.is_ok(), "{:?}", s.err().map(|e| e.to_string()));
    let err = Settings::load_from(
        None,
        env(&[
            ("OTPMINT__CRYPTO__MASTER_KEY", key.as_str()),
            ("OTPMINT__CRYPTO__MASTER_KEY_FILE", "/data/master.key"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("both set") && err.contains("/data/master.key") && !err.contains(&key),
        "{err}"
    );
    let err = Settings::load_from(None, env(&[("OTPMINT__CRYPTO__MASTER_KEY_FILE", "")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("crypto.master_key_file"), "{err}");
}

/// A provider base URL carries no credentials (`config check` would print them): user info,
/// with or without a password, is refused naming the key and not the password.
#[test]
fn a_provider_base_url_with_credentials_is_refused_without_showing_them() {
    for url in [
        "https://:pw-never-shown@pm.example",
        "https://user:pw-never-shown@pm.example",
        "https://user@pm.example",
    ] {
        let err = Settings::load_from(
            None,
            env(&[("OTPMINT__DELIVERY__PROVIDER_BASE_URLS__POSTMARK", url)]),
        )
        .map(drop)
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("delivery.provider_base_urls.postmark"),
            "{url}: {err}"
        );
        assert!(!err.contains("pw-never-shown"), "{url}: {err}");
    }
}

/// A token with white space at an end could never be presented (bearer tokens are read
/// without it): refused, naming the key and never the value.
#[test]
fn a_token_with_white_space_at_an_end_is_refused() {
    for (var, key) in [
        ("OTPMINT__ADMIN__TOKEN", "admin.token"),
        ("OTPMINT__METRICS__TOKEN", "metrics.token"),
    ] {
        for value in [
            "   ",
            " secret-token-0123456789abcdef0123",
            "secret-token-0123456789abcdef0123\t",
        ] {
            let err = Settings::load_from(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains("white space"), "{err}");
            assert!(!err.contains("secret-token"), "{err}");
        }
    }
    // Spaces inside are a header's to carry.
    assert!(Settings::load_from(None, env(&[("OTPMINT__ADMIN__TOKEN", "a b")])).is_ok());
}
