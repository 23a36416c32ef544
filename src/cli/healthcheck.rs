//! `otpmint healthcheck`: ask the server's `/readyz` (API.md §18) and exit by its answer.

use std::path::Path;

use super::CliError;
use crate::config::Settings;

/// `otpmint healthcheck` from start to exit status (API.md §18.1): 0 when ready, 1 for
/// anything else — a usage error included. With `--url` no configuration is read; without
/// it only `server.bind` is, so a running server is not called unhealthy for a setting it
/// does not reload (a token file being rewritten, a key a later release no longer knows).
pub fn healthcheck_now(config: Option<&Path>, url: Option<&str>) -> std::process::ExitCode {
    let bind = match url {
        Some(_) => String::new(),
        None => match Settings::bind_only(config, std::env::vars()) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("not ready: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    let checked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError(format!("not ready: cannot start the async runtime: {e}")))
        .and_then(|rt| rt.block_on(healthcheck(&bind, url)));
    match checked {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.0);
            std::process::ExitCode::FAILURE
        }
    }
}

/// The URL `otpmint healthcheck` asks: `--url` (its `/readyz` added unless it ends so), or
/// `bind` (`server.bind`) with an unspecified address replaced by loopback.
fn readyz_url(bind: &str, url: Option<&str>) -> String {
    let base = match url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let bind = bind.trim();
            let bind = match bind.rsplit_once(':') {
                Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
                Some(("[::]", port)) => format!("[::1]:{port}"),
                _ => bind.to_string(),
            };
            format!("http://{bind}")
        }
    };
    if base.ends_with("/readyz") {
        base
    } else {
        format!("{base}/readyz")
    }
}

pub(super) async fn healthcheck(bind: &str, url: Option<&str>) -> Result<(), CliError> {
    // `/readyz` goes after the path: a query or fragment would swallow it.
    if let Some(mut given) = url.and_then(|u| reqwest::Url::parse(u).ok()) {
        if given.query().is_some() || given.fragment().is_some() {
            let _ = given.set_password(None);
            return Err(CliError(format!(
                "not ready: --url {given} must be the server's base URL or its /readyz URL, without a query or fragment"
            )));
        }
    }
    let url = readyz_url(bind, url);
    if !reqwest::Url::parse(&url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
        return Err(CliError(format!(
            "not ready: --url {url} is not an http:// or https:// URL"
        )));
    }
    // Straight to the server: a container's HTTP_PROXY must not stand between a health
    // check and the server beside it.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    match client.get(&url).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => {
            eprintln!("ready: {url}");
            Ok(())
        }
        Ok(r) => Err(CliError(format!(
            "not ready: {url} answered {}",
            r.status()
        ))),
        Err(e) if e.is_timeout() => Err(CliError(format!(
            "not ready: {url} did not answer within 2 s"
        ))),
        Err(_) => Err(CliError(format!("not ready: cannot reach {url}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_healthcheck_asks_readyz_on_the_bound_address_or_the_given_url() {
        let none = Vec::<(String, String)>::new;
        let bind = Settings::bind_only(None, none()).unwrap();
        assert_eq!(readyz_url(&bind, None), "http://127.0.0.1:8080/readyz");
        assert_eq!(
            readyz_url("0.0.0.0:9000", None),
            "http://127.0.0.1:9000/readyz"
        );
        assert_eq!(readyz_url("[::]:9000", None), "http://[::1]:9000/readyz");
        assert_eq!(readyz_url("", Some("http://h:1/")), "http://h:1/readyz");
        assert_eq!(
            readyz_url("", Some("http://h:1/readyz")),
            "http://h:1/readyz"
        );
        // The variable sets it (any case of its name); nothing else is read or checked.
        let env = vec![
            (
                "OTPMINT__server__BIND".to_string(),
                "0.0.0.0:7000".to_string(),
            ),
            (
                "OTPMINT__ADMIN__TOKEN_FILE".to_string(),
                "/nowhere".to_string(),
            ),
            ("OTPMINT__NO__SUCH_KEY".to_string(), "x".to_string()),
        ];
        assert_eq!(Settings::bind_only(None, env).unwrap(), "0.0.0.0:7000");
        let missing = Settings::bind_only(Some(Path::new("/no/such.toml")), none());
        assert!(missing.unwrap_err().to_string().contains("/no/such.toml"));
    }

    #[tokio::test]
    async fn a_url_that_is_none_is_named_so_not_as_unreachable() {
        for bad in ["not-a-url", "ftp://h:1"] {
            let e = healthcheck("", Some(bad)).await.unwrap_err();
            assert!(e.0.contains("is not an http:// or https:// URL"), "{}", e.0);
        }
        // A query or fragment would carry `/readyz` away from the path.
        for bad in ["http://127.0.0.1:1/?x=1", "http://127.0.0.1:1/#top"] {
            let e = healthcheck("", Some(bad)).await.unwrap_err();
            assert!(e.0.contains("without a query or fragment"), "{}", e.0);
        }
    }
}
