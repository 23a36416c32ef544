//! The CLI's commands as a person runs them (API.md §5, §18.8): which database they use and
//! what they refuse, `config check` against what `serve` would refuse, usage errors, output
//! to a closed pipe, and `keys generate`.

use std::process::Stdio;

use serde_json::Value;

use crate::binary::otpmint;

/// CLI commands other than `serve` and `migrate` never create a database or a master key
/// (API.md §18.8): with none where the configuration points they fail naming the path, and
/// every command that uses a database says which on stderr.
#[test]
fn cli_commands_do_not_create_a_database_and_say_which_they_use() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["tenant", "list"],
        vec!["stats"],
        vec!["keys", "rotate"],
    ] {
        let out = otpmint(dir.path()).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no database at") && err.contains("otpmint.db"),
            "{args:?}: {err}"
        );
        assert!(
            !dir.path().join("data").exists(),
            "{args:?} created something"
        );
    }
    let out = otpmint(dir.path()).arg("migrate").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("database: sqlite") && err.contains("otpmint.db"),
        "{err}"
    );
    assert!(dir.path().join("data/otpmint.db").exists());
    // The log names the migrations applied, and only when there were any.
    assert!(
        err.contains("migrated the database") && err.contains("V1__initial"),
        "{err}"
    );
    let again = otpmint(dir.path()).arg("migrate").output().unwrap();
    assert!(again.status.success());
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(!log.contains("migrated the database"), "{log}");
    let out = otpmint(dir.path())
        .args(["tenant", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("database: sqlite"), "{err}");
}

/// Output nobody reads any more — `otpmint tenant list | head -1`, a full disk — is the
/// command's one error line and exit 1 (API.md §5), not a panic with a backtrace; a tenant
/// made before its shown-once key could be written says so and how to get another.
#[test]
fn output_to_a_closed_pipe_is_one_error_line_and_says_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let out = otpmint(dir.path()).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // A pipe whose reader is gone before the command writes: every write fails (EPIPE).
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    let create = |name: &str| {
        let mut c = otpmint(dir.path());
        c.args(["tenant", "create", "--name", name, "--test", "--json"])
            .args(["--smtp-host", "8.8.8.8", "--smtp-port", "587"])
            .args(["--smtp-from", "no-reply@acme.example"]);
        c
    };
    let out = create("Acme").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    for args in [
        vec!["tenant", "list"],
        vec!["tenant", "list", "--json"],
        vec!["keys", "generate"],
    ] {
        let out = otpmint(dir.path())
            .args(&args)
            .stdout(closed())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: cannot write the output"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let out = create("Lost").stdout(closed()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("was created, but the key was not shown")
            && err.contains("otpmint tenant rotate-secret tnt_"),
        "{err}"
    );
    // It was made, and a new key can be had for it.
    let out = otpmint(dir.path())
        .args(["tenant", "list", "--json"])
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lost = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Lost")
        .unwrap_or_else(|| panic!("{list}"));
    let id = lost["id"].as_str().unwrap();
    assert!(err.contains(&format!("rotate-secret {id}`")), "{err}");
    let out = otpmint(dir.path())
        .args(["tenant", "rotate-secret", id])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && shown.contains("secret key: sk_test_"),
        "{out:?}"
    );
}

/// Nor do they make an installation in a database that holds none, or migrate one (API.md
/// §18.8): an empty SQLite file, an empty PostgreSQL database, a schema without a keyring and
/// a schema older than the binary's are each refused with one line naming the database and
/// what to run, and each is left as it was.
#[test]
fn cli_commands_refuse_a_database_that_is_no_installation_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("otpmint.db");
    let url = format!("sqlite://{}", db.display());
    // A master key, so that the database is what the command stops at.
    let out = otpmint(dir.path())
        .args(["keys", "generate"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let refused = |extra: &[(&str, &str)], why: &str| {
        for args in [vec!["tenant", "list"], vec!["keys", "rotate"]] {
            let out = otpmint(dir.path())
                .args(&args)
                .env("OTPMINT__CRYPTO__MASTER_KEY", &key)
                .envs(extra.iter().copied())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}: {err}");
            assert!(err.contains(why), "{args:?}: {err}");
            let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
            assert_eq!(errors.len(), 1, "{args:?}: {err}");
            assert!(errors[0].contains("database "), "{args:?}: {err}");
        }
    };

    let migrate = || {
        let out = otpmint(dir.path())
            .arg("migrate")
            .env("OTPMINT__CRYPTO__MASTER_KEY", &key)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
    };

    // An empty file: no schema is made in it.
    std::fs::write(&db, b"").unwrap();
    refused(&[], "run `otpmint migrate`");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);

    // `migrate` makes the installation; without its keyring the commands refuse and make none.
    std::fs::remove_file(&db).unwrap();
    migrate();
    assert!(crate::lifecycle::sql(&url, "SELECT COUNT(*) FROM keyring") > 0);
    crate::lifecycle::sql(&url, "DELETE FROM keyring");
    refused(&[], "no keyring");
    assert_eq!(
        crate::lifecycle::sql(&url, "SELECT COUNT(*) FROM keyring"),
        0
    );

    // A schema older than the binary's is not migrated by them.
    std::fs::remove_file(&db).unwrap();
    migrate();
    const DROP_NEWEST: &str = "DELETE FROM refinery_schema_history WHERE version = (SELECT MAX(version) FROM refinery_schema_history)";
    let migrations = crate::lifecycle::sql(&url, "SELECT COUNT(*) FROM refinery_schema_history");
    crate::lifecycle::sql(
        &url,
        "CREATE TABLE newest AS SELECT * FROM refinery_schema_history WHERE version = (SELECT MAX(version) FROM refinery_schema_history)",
    );
    crate::lifecycle::sql(&url, DROP_NEWEST);
    refused(&[], "is older than this otpmint");
    assert_eq!(
        crate::lifecycle::sql(&url, "SELECT COUNT(*) FROM refinery_schema_history"),
        migrations - 1
    );
    // `config check` passes it: `serve` migrates it at its start.
    let config_check = || {
        let out = otpmint(dir.path())
            .args(["config", "check"])
            .env("OTPMINT__CRYPTO__MASTER_KEY", &key)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = config_check();
    assert!(ok, "{err}");
    // Its keyring is read as it stands: under another master key, `serve` would migrate it
    // and then fail, so `config check` fails, and migrates nothing.
    let other = otpmint(dir.path())
        .args(["config", "check"])
        .env(
            "OTPMINT__CRYPTO__MASTER_KEY",
            "9NQ6HO6F1PqzdxHgaNrxucUxPACCwfEt/THEBkzx3ok=",
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        !other.status.success() && err.contains("does not match"),
        "{err}"
    );
    assert_eq!(
        crate::lifecycle::sql(&url, "SELECT COUNT(*) FROM refinery_schema_history"),
        migrations - 1
    );
    // Nor one newer than the binary's (a newer otpmint made it): `serve` refuses it too.
    crate::lifecycle::sql(
        &url,
        "INSERT INTO refinery_schema_history SELECT * FROM newest",
    );
    crate::lifecycle::sql(
        &url,
        "INSERT INTO refinery_schema_history SELECT version + 1, name, applied_on, checksum FROM newest",
    );
    refused(&[], "is newer than this otpmint");
    // Nor does `config check` pass it, as `serve` would not start on it.
    let (ok, err) = config_check();
    assert!(
        !ok && err.contains("is newer than this otpmint") && err.contains("(database: sqlite"),
        "{err}"
    );
    crate::lifecycle::sql(&url, DROP_NEWEST);
    // With its newest migration on record again, they work.
    let out = otpmint(dir.path())
        .args(["tenant", "list"])
        .env("OTPMINT__CRYPTO__MASTER_KEY", &key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An empty PostgreSQL database: no table is made in it.
    if let Some(base) = crate::helpers::postgres_base_url() {
        let pg = crate::helpers::fresh_pg_database(&base);
        refused(&[("OTPMINT__DATABASE__URL", &pg)], "run `otpmint migrate`");
        assert_eq!(
            crate::lifecycle::sql(
                &pg,
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"
            ),
            0
        );
        // Migrated, but without its keyring: refused, and none is made.
        let out = otpmint(dir.path())
            .arg("migrate")
            .env("OTPMINT__CRYPTO__MASTER_KEY", &key)
            .env("OTPMINT__DATABASE__URL", &pg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        crate::lifecycle::sql(&pg, "DELETE FROM keyring");
        refused(&[("OTPMINT__DATABASE__URL", &pg)], "no keyring");
        assert_eq!(
            crate::lifecycle::sql(&pg, "SELECT COUNT(*) FROM keyring"),
            0
        );
    }
}

/// `config check` refuses what `serve` would refuse of a database that exists (API.md
/// §18.8; found by a black-box audit): its keyring with the master key file gone or with
/// another key, and a file that is no SQLite database — naming the setting at fault.
#[test]
fn config_check_fails_where_serve_would_refuse_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let check = |envs: &[(&str, &str)]| {
        let out = otpmint(dir.path())
            .args(["config", "check"])
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let out = otpmint(dir.path()).arg("migrate").output().unwrap();
    assert!(out.status.success());
    let (ok, err) = check(&[]);
    assert!(ok, "{err}");
    let key = dir.path().join("data/master.key");
    let aside = dir.path().join("master.key.aside");
    std::fs::rename(&key, &aside).unwrap();
    let (ok, err) = check(&[]);
    assert!(!ok && err.contains("crypto.master_key_file"), "{err}");
    assert!(!key.exists(), "config check made a key file");
    std::fs::rename(&aside, &key).unwrap();
    let other = "9NQ6HO6F1PqzdxHgaNrxucUxPACCwfEt/THEBkzx3ok=";
    let (ok, err) = check(&[
        ("OTPMINT__CRYPTO__MASTER_KEY", other),
        ("OTPMINT__CRYPTO__MASTER_KEY_FILE", ""),
    ]);
    assert!(!ok && err.contains("does not match"), "{err}");
    assert!(!err.contains(other), "{err}");
    let foreign = dir.path().join("foreign.db");
    std::fs::write(&foreign, "not a database, not at all, no").unwrap();
    let url = format!("sqlite://{}", foreign.display());
    let (ok, err) = check(&[("OTPMINT__DATABASE__URL", url.as_str())]);
    assert!(!ok && err.contains("database.url"), "{err}");
    // The same URL read from a file is named by that key and file.
    let url_file = dir.path().join("db.url");
    std::fs::write(&url_file, &url).unwrap();
    let file_var = url_file.to_str().unwrap();
    let (ok, err) = check(&[("OTPMINT__DATABASE__URL_FILE", file_var)]);
    assert!(
        !ok && err.contains(&format!("database.url_file {file_var}")),
        "{err}"
    );
    // Untouched: the database still opens as before.
    let (ok, err) = check(&[]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(&foreign).unwrap(),
        b"not a database, not at all, no"
    );
    // A copy cut short (a backup whose copy stopped half way) is refused, and the check
    // leaves nothing beside it: no `-wal` or `-shm` file made by reading it.
    let whole = std::fs::read(dir.path().join("data/otpmint.db")).unwrap();
    let cut = dir.path().join("cut.db");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let url = format!("sqlite://{}", cut.display());
    let (ok, err) = check(&[("OTPMINT__DATABASE__URL", url.as_str())]);
    assert!(!ok && err.contains("database.url"), "{err}");
    for side in ["cut.db-wal", "cut.db-shm"] {
        assert!(!dir.path().join(side).exists(), "{side} left behind");
    }
    assert_eq!(std::fs::read(&cut).unwrap(), &whole[..whole.len() / 2]);
}

/// `config check` runs the checks `serve` runs before it binds (API.md §18.8): certificate
/// files that are missing or do not parse fail it, naming the setting.
#[test]
fn config_check_fails_on_certificates_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate").unwrap();
    for (section, file) in [
        ("smtp", "missing.pem"),
        ("webhooks", "missing.pem"),
        ("smtp", "garbage.pem"),
    ] {
        let conf = dir.path().join("c.toml");
        std::fs::write(
            &conf,
            format!(
                "[{section}]\nextra_root_certificates = [\"{}\"]\n",
                dir.path().join(file).display()
            ),
        )
        .unwrap();
        let out = otpmint(dir.path())
            .arg("--config")
            .arg(&conf)
            .args(["config", "check"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{section} {file}: {err}");
        assert!(
            err.contains(&format!("{section}.extra_root_certificates")),
            "{err}"
        );
    }
    // The PostgreSQL CA file is parsed, and the master key decoded, as serve does.
    let garbage = dir.path().join("garbage.pem");
    let bad_key = dir.path().join("bad.key");
    std::fs::write(&bad_key, "not base64 of 32 bytes\n").unwrap();
    for (env, value, setting) in [
        (
            "OTPMINT__DATABASE__TLS_CA_FILE",
            garbage.to_str().unwrap(),
            "database.tls_ca_file",
        ),
        (
            "OTPMINT__CRYPTO__MASTER_KEY_FILE",
            bad_key.to_str().unwrap(),
            "crypto.master_key_file",
        ),
        // An sslmode the connector refuses, as serve would (its password never shown).
        (
            "OTPMINT__DATABASE__URL",
            "postgres://otp:pw-never-shown@127.0.0.1:1/otp?sslmode=bogus",
            "sslmode",
        ),
    ] {
        let out = otpmint(dir.path())
            .args(["config", "check"])
            .env(env, value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env}: {err}");
        assert!(err.contains(setting), "{env}: {err}");
        assert!(!err.contains("pw-never-shown"), "{env}: {err}");
    }
    let out = otpmint(dir.path())
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A mistyped command line is one clear line on stderr and exit 2 (API.md §5), naming what
/// is wrong; `--help` still prints the usage and exits 0.
#[test]
fn a_usage_error_is_one_line_and_help_still_prints_the_usage() {
    let dir = tempfile::tempdir().unwrap();
    let out = otpmint(dir.path())
        .args(["tenant", "create", "--name", "A"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error:") && err.contains("--smtp-host"),
        "{err}"
    );
    let out = otpmint(dir.path()).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"));
    // An argument that is not UTF-8: one line too, no panic — 1 for healthcheck (API.md
    // §18.1: its statuses are 0 and 1), 2 for the others.
    #[cfg(unix)]
    for (command, status) in [("healthcheck", 1), ("migrate", 2)] {
        use std::os::unix::ffi::OsStrExt;
        let out = otpmint(dir.path())
            .arg(command)
            .arg(std::ffi::OsStr::from_bytes(b"--x\xff"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{command}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{command}: {err}");
    }
    // A command group alone names the group's subcommands, in one line too.
    for (group, commands) in [
        ("tenant", &["create", "list", "rotate-secret"][..]),
        ("keys", &["generate", "rotate", "rotate-data-key"][..]),
        ("config", &["check"][..]),
        ("smtp", &["test"][..]),
    ] {
        let out = otpmint(dir.path()).arg(group).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("error: `otpmint {group}` needs a command")),
            "{err}"
        );
        for c in commands {
            assert!(err.contains(c), "{c}: {err}");
        }
        assert!(out.stdout.is_empty());
    }
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

/// `keys generate` needs no configuration (the key is what a configuration may still lack,
/// as docs/deployment.md has it made first): an environment that names no key file, or a
/// configuration file that would not load, does not stop it, and it makes nothing.
#[test]
fn keys_generate_needs_no_configuration() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nbind = \"nowhere\"\n",
    )
    .unwrap();
    let no_key_file = otpmint(dir.path())
        .args(["keys", "generate"])
        .env("OTPMINT__CRYPTO__MASTER_KEY_FILE", "")
        .output()
        .unwrap();
    let bad_file = otpmint(dir.path())
        .args(["--config", "bad.toml", "keys", "generate"])
        .output()
        .unwrap();
    let mut keys = Vec::new();
    for out in [no_key_file, bad_file] {
        assert!(out.status.success(), "{out:?}");
        let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .unwrap();
        assert_eq!(bytes.len(), 32, "{key}");
        keys.push(key);
    }
    assert_ne!(keys[0], keys[1]);
    let made: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(made.len(), 1, "only bad.toml: {made:?}");
    // Everything else still reads the configuration first.
    let out = otpmint(dir.path())
        .args(["--config", "bad.toml", "tenant", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.bind"));
}
