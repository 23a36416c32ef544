//! Magic links (API.md §14.2): where people reach them, the return URLs a tenant allows,
//! and the redirect after a link verified its key.

use reqwest::Url;

/// The longest return URL (or allowlist entry) accepted.
pub const RETURN_URL_MAX: usize = 2048;
/// Return URL prefixes a tenant may allow.
pub const ALLOWED_RETURN_URLS_MAX: usize = 20;
/// What a return URL (or an allowlist entry) must look like.
pub const RETURN_URL_RULE: &str =
    "must be an absolute https:// URL (http:// only for localhost), without user info, fragment, white space or invisible or bidirectional-control characters, at most 2048 characters";

fn local(u: &Url) -> bool {
    matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
}

/// A URL people's browsers go to: https, or http on localhost (development); no user info,
/// no fragment.
fn browser_url(s: &str) -> Option<Url> {
    if s.len() > RETURN_URL_MAX
        // one that shows as nothing or reorders what follows reads otherwise than it goes
        || s.chars()
            .any(|c| c.is_whitespace() || super::grammar::deceptive(c))
    {
        return None;
    }
    let u = Url::parse(s).ok()?;
    let scheme_ok = u.scheme() == "https" || (u.scheme() == "http" && local(&u));
    let ok = scheme_ok
        && u.host_str().is_some_and(|h| !h.is_empty())
        && u.username().is_empty()
        && u.password().is_none()
        && u.fragment().is_none();
    ok.then_some(u)
}

/// `server.public_url` as links start with it (no trailing `/`), if it is a valid one: no
/// query either.
pub fn public_base(s: &str) -> Option<String> {
    let u = browser_url(s)?;
    if u.query().is_some() {
        return None;
    }
    Some(u.as_str().trim_end_matches('/').to_string())
}

/// An entry of a tenant's `allowed_return_urls` as it is compared: normalised (lower-case host,
/// default port dropped, `.` and `..` resolved), like the return URLs compared with it.
pub fn parse_allowed(s: &str) -> Option<String> {
    browser_url(s).map(|u| u.as_str().to_string())
}

/// Why an entry for `allowed_return_urls` is refused when it is stored, or `None`: not a URL
/// people may be sent to, a host with a `*` (it would be compared as written, never as a
/// wildcard), or a query (entries are prefixes of an origin and path: a query prefix would
/// allow only itself).
pub fn allowed_entry_refusal(s: &str) -> Option<&'static str> {
    let Some(u) = browser_url(s) else {
        return Some(RETURN_URL_RULE);
    };
    if u.host_str().is_some_and(|h| h.contains('*')) {
        Some("must name its host, without a wildcard: list each host (at most 20 entries)")
    } else if u.query().is_some() {
        Some("must be an origin and a path, without a query (?…): return URLs may add any query to it")
    } else {
        None
    }
}

/// `return_url` if it is a URL people may be sent to and, normalised as a browser reads it,
/// starts with one of `allowed` at a boundary (the prefix ends with `/`, or the URL goes on
/// with `/`, `?` or nothing), so `https://app.example` does not allow
/// `https://app.example.evil.test` and `https://app.example/auth/` does not allow
/// `https://app.example/auth/../admin`. Kept byte for byte as given (API.md §17.7) — the
/// browser reads it as it was checked — unless it holds characters a `Location` header
/// cannot carry: then its normalised (percent-encoded) form.
pub fn allowed_return(return_url: &str, allowed: &[String]) -> Option<String> {
    let url = browser_url(return_url)?.as_str().to_string();
    let ok = allowed.iter().filter_map(|p| parse_allowed(p)).any(|p| {
        match url.strip_prefix(p.as_str()) {
            Some(rest) => p.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?']),
            None => false,
        }
    });
    let visible = return_url.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| if visible { return_url.to_string() } else { url })
}

/// Why `return_url` is not allowed, in words for its field: a fragment (the page appends
/// to the query, and a browser does not send a fragment to the server), not a URL a browser
/// may be sent to (white space, another scheme, user info), or no allowed prefix.
pub fn return_refusal(return_url: &str) -> &'static str {
    if return_url.contains('#') {
        "must not have a fragment (#…): otpmint adds its parameters to the query, and a browser never sends a fragment to your server"
    } else if browser_url(return_url).is_none() {
        RETURN_URL_RULE
    } else {
        "must start with one of the tenant's allowed_return_urls (https://, or http://localhost)"
    }
}

/// `return_url` with the query parameters `names` taken out and `pairs` added, everything
/// else byte for byte (API.md §17.7): what the tenant's page reads is ours, never a value
/// planted in the return URL (a name is compared decoded, so `k%65y` is `key` too).
pub fn with_query(return_url: &str, names: &[&str], pairs: &[(&str, &str)]) -> Option<String> {
    let (base, fragment) = match return_url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (return_url, None),
    };
    let (path, query) = base.split_once('?').unwrap_or((base, ""));
    // Each `&` part is kept as it is, its empty ones too; only the parameters named as ours
    // are taken out. Some parsers split on `;` as well: within a part, a `;` piece naming
    // one of ours is taken out and the rest kept, so `x=1;key=evil` cannot plant a key and
    // `x` stays.
    let ours = |piece: &str| {
        let name = form_urlencoded::parse(piece.as_bytes())
            .next()
            .map(|(k, _)| k.into_owned())
            .unwrap_or_default();
        names.contains(&name.as_str())
    };
    let mut kept: Vec<String> = Vec::new();
    for part in query.split('&').filter(|_| !query.is_empty()) {
        let pieces: Vec<&str> = part.split(';').filter(|p| !ours(p)).collect();
        if part.is_empty() || !pieces.is_empty() {
            kept.push(pieces.join(";"));
        }
    }
    kept.push(
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().copied())
            .finish(),
    );
    let mut out = format!("{path}?{}", kept.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// The origin of a URL (`https://app.example.com:8443`), for a page's `form-action`.
pub fn origin(url: &str) -> Option<String> {
    let o = Url::parse(url).ok()?.origin();
    o.is_tuple().then(|| o.ascii_serialization())
}

/// `return_url` with `key` and `status=verified` in its query.
pub fn verified_redirect(return_url: &str, key: &str) -> Option<String> {
    with_query(
        return_url,
        &["key", "status"],
        &[("key", key), ("status", "verified")],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_https_or_local_http_without_query() {
        assert_eq!(
            public_base("https://otp.example.com/").as_deref(),
            Some("https://otp.example.com")
        );
        assert_eq!(
            public_base("https://example.com/otp/").as_deref(),
            Some("https://example.com/otp")
        );
        assert!(public_base("http://localhost:8080").is_some());
        for bad in [
            "http://otp.example.com",
            "https://otp.example.com/?x=1",
            "https://otp.example.com/#x",
            "https://user:pw@otp.example.com",
            "ftp://otp.example.com",
            "otp.example.com",
            "",
        ] {
            assert!(public_base(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_allowed_prefix_with_an_invisible_or_reordering_character_is_refused() {
        assert!(parse_allowed("https://app.example.com/").is_some());
        for bad in [
            "https://app.example.com/\u{202E}nigol",
            "https://app.\u{200B}example.com/",
            "https://app.example.com/\u{2066}x",
            "https://app.example.com/\u{FEFF}",
        ] {
            assert!(parse_allowed(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_refused_return_url_is_told_why() {
        assert!(return_refusal("https://app.example.com/#frag").contains("fragment"));
        assert!(return_refusal("https://evil.example.com/").contains("allowed_return_urls"));
        // Not a URL a browser may be sent to: said so, not that its prefix is not allowed.
        for bad in [
            "https://app.example.com/back?q=a b",
            "https://app.example.com/\n",
            "ftp://app.example.com/",
            "https://u:p@app.example.com/",
        ] {
            assert_eq!(return_refusal(bad), RETURN_URL_RULE, "{bad}");
        }
    }

    #[test]
    fn a_return_url_must_start_with_an_allowed_prefix_at_a_boundary() {
        let allowed = vec![
            "https://app.example.com".to_string(),
            "https://b.example.com/auth/".to_string(),
            "http://localhost:3000/cb".to_string(),
        ];
        for ok in [
            "https://app.example.com",
            "https://app.example.com/done?x=1",
            "https://app.example.com?x=1",
            "https://b.example.com/auth/callback",
            "http://localhost:3000/cb?next=/",
            "https://APP.example.com:443/done",
        ] {
            assert!(allowed_return(ok, &allowed).is_some(), "{ok}");
        }
        for bad in [
            "https://app.example.com.evil.test/",
            "https://app.example.community/",
            "https://b.example.com/authx",
            "http://app.example.com/",
            "https://other.example.com/",
            "https://app.example.com/#frag",
            "javascript:alert(1)",
            "https://b.example.com/auth/../admin",
            "https://b.example.com/auth/%2e%2e/admin",
        ] {
            assert!(allowed_return(bad, &allowed).is_none(), "{bad}");
        }
        assert_eq!(
            verified_redirect("https://app.example.com/cb?a=1", "otp_k").as_deref(),
            Some("https://app.example.com/cb?a=1&key=otp_k&status=verified")
        );
        // A key planted in the return URL is not what the page reads.
        assert_eq!(
            verified_redirect("https://app.example.com/cb?key=evil&status=x&a=1", "otp_k")
                .as_deref(),
            Some("https://app.example.com/cb?a=1&key=otp_k&status=verified")
        );
        // Checked as a browser reads it, kept as given.
        assert_eq!(
            allowed_return("https://APP.example.com:443/a/./b", &allowed).as_deref(),
            Some("https://APP.example.com:443/a/./b")
        );
        assert_eq!(
            verified_redirect(
                "https://app.example.com/cb?b=%20x&c&d=e+f&k%65y=evil",
                "otp_k"
            )
            .as_deref(),
            Some("https://app.example.com/cb?b=%20x&c&d=e+f&key=otp_k&status=verified")
        );
        assert_eq!(
            verified_redirect("https://app.example.com/cb?x=1;key=evil&y=2", "otp_k").as_deref(),
            Some("https://app.example.com/cb?x=1&y=2&key=otp_k&status=verified")
        );
        // The rest is kept byte for byte: empty parts, `;` pieces that are not ours.
        for (given, kept) in [
            (
                "https://a.example/cb?&&a=1&&",
                "https://a.example/cb?&&a=1&&&",
            ),
            (
                "https://a.example/cb?a=1&x=1;key=evil;y=2&b=2",
                "https://a.example/cb?a=1&x=1;y=2&b=2&",
            ),
            ("https://a.example/cb?a=1;", "https://a.example/cb?a=1;&"),
            ("https://a.example/cb?", "https://a.example/cb?"),
            (
                "https://a.example/cb?key=1;status=2#f",
                "https://a.example/cb?",
            ),
        ] {
            let got = verified_redirect(given, "otp_k").unwrap();
            let frag = given
                .split_once('#')
                .map(|(_, f)| format!("#{f}"))
                .unwrap_or_default();
            assert_eq!(
                got,
                format!("{kept}key=otp_k&status=verified{frag}"),
                "{given}"
            );
        }
        // A URL a Location header cannot carry as is goes percent-encoded.
        assert_eq!(
            allowed_return("https://app.example.com/caf\u{e9}", &allowed).as_deref(),
            Some("https://app.example.com/caf%C3%A9")
        );
        assert_eq!(
            origin("https://app.example.com:8443/cb?a=1").as_deref(),
            Some("https://app.example.com:8443")
        );
        assert!(parse_allowed("http://example.com").is_none());
        // Stored entries: a wildcard host or a query is refused, said so.
        for (entry, says) in [
            ("https://*.example.com", "wildcard"),
            ("https://%2A.example.com/x", "wildcard"),
            ("https://app.example.com/auth?x=", "query"),
            ("https://app.example.com/?", "query"),
            ("http://example.com", "https://"),
        ] {
            let why = allowed_entry_refusal(entry).unwrap_or_default();
            assert!(why.contains(says), "{entry}: {why}");
        }
        for fine in [
            "https://app.example.com",
            "https://app.example.com/auth/",
            "http://localhost:3000/cb",
        ] {
            assert_eq!(allowed_entry_refusal(fine), None, "{fine}");
        }
    }
}
