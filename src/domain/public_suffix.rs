//! Who may own a domain: not a bare top-level name, not a public suffix (the Public Suffix
//! List, `data/public_suffix_list.dat`, read once: the names under `co.uk` or `github.io` are
//! other organisations'), not a mailbox provider whose addresses are the public's.

use std::sync::OnceLock;

use publicsuffix::{List, Psl};

const LIST: &str = include_str!("data/public_suffix_list.dat");

fn list() -> &'static List {
    static PARSED: OnceLock<List> = OnceLock::new();
    // The list is ours and tested to parse (below); an empty one would call nothing a suffix
    // but a bare top-level name, which callers refuse on their own.
    PARSED.get_or_init(|| LIST.parse().unwrap_or_default())
}

/// Mailbox providers whose addresses belong to the public: a tenant sending from one of
/// them (a Gmail account's SMTP login is common) owns one address there, not the domain.
/// No list is whole: this holds the large ones; a public suffix (co.uk) is refused apart.
const SHARED_MAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "outlook.de",
    "outlook.fr",
    "outlook.es",
    "outlook.it",
    "outlook.jp",
    "hotmail.com",
    "hotmail.co.uk",
    "hotmail.fr",
    "hotmail.de",
    "hotmail.it",
    "hotmail.es",
    "live.com",
    "live.co.uk",
    "live.fr",
    "live.de",
    "live.it",
    "live.nl",
    "msn.com",
    "yahoo.com",
    "yahoo.co.uk",
    "yahoo.fr",
    "yahoo.de",
    "yahoo.es",
    "yahoo.it",
    "yahoo.co.jp",
    "yahoo.com.br",
    "yahoo.ca",
    "yahoo.com.au",
    "yahoo.co.in",
    "ymail.com",
    "rocketmail.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "proton.me",
    "protonmail.com",
    "protonmail.ch",
    "pm.me",
    "tutanota.com",
    "tutanota.de",
    "tuta.io",
    "tuta.com",
    "hey.com",
    "fastmail.com",
    "fastmail.fm",
    "zoho.com",
    "zohomail.com",
    "mail.com",
    "gmx.de",
    "gmx.net",
    "gmx.com",
    "gmx.at",
    "gmx.ch",
    "gmx.fr",
    "web.de",
    "t-online.de",
    "freenet.de",
    "arcor.de",
    "posteo.de",
    "mailbox.org",
    "orange.fr",
    "wanadoo.fr",
    "free.fr",
    "sfr.fr",
    "laposte.net",
    "libero.it",
    "virgilio.it",
    "alice.it",
    "tiscali.it",
    "seznam.cz",
    "wp.pl",
    "o2.pl",
    "onet.pl",
    "interia.pl",
    "mail.ru",
    "bk.ru",
    "list.ru",
    "inbox.ru",
    "rambler.ru",
    "yandex.ru",
    "yandex.com",
    "ya.ru",
    "ukr.net",
    "abv.bg",
    "qq.com",
    "foxmail.com",
    "163.com",
    "126.com",
    "sina.com",
    "naver.com",
    "daum.net",
    "hanmail.net",
    "comcast.net",
    "att.net",
    "verizon.net",
    "sbcglobal.net",
    "bellsouth.net",
    "cox.net",
    "earthlink.net",
    "btinternet.com",
    "sky.com",
    "virginmedia.com",
    "ntlworld.com",
    "talktalk.net",
    "shaw.ca",
    "rogers.com",
    "sympatico.ca",
    "bigpond.com",
    "optusnet.com.au",
    "xtra.co.nz",
    "rediffmail.com",
    "skynet.be",
    "telenet.be",
    "ziggo.nl",
    "kpnmail.nl",
    "planet.nl",
    "home.nl",
    "bluewin.ch",
    "hushmail.com",
    "bol.com.br",
    "uol.com.br",
];
/// Whether one sender may own `domain` (lower-case) and every name under it: a name someone
/// registered (`acme.co.uk`), not a public suffix nor a mailbox provider's (`gmail.com`).
pub fn has_one_owner(domain: &str) -> bool {
    domain.contains('.') && !SHARED_MAIL_DOMAINS.contains(&domain) && !is_public_suffix(domain)
}

/// Whether `domain` (a host name, any case, Unicode or ASCII) is a public suffix: a name
/// under which anyone may register their own (`com`, `co.uk`, `github.io`), as opposed to a
/// name someone registered (`acme.co.uk`, `acme.github.io`) or one under it.
pub fn is_public_suffix(domain: &str) -> bool {
    let ascii = idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_ascii_lowercase());
    let name = ascii.trim_end_matches('.');
    if name.is_empty() {
        return true;
    }
    list()
        .suffix(name.as_bytes())
        .is_none_or(|s| s.as_bytes() == name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_parses_and_tells_suffixes_from_registered_names() {
        assert!(!list().is_empty());
        for suffix in [
            "com",
            "co.uk",
            "com.au",
            "github.io",
            "CO.UK",
            "ck",
            "公司.cn",
        ] {
            assert!(is_public_suffix(suffix), "{suffix}");
        }
        for owned in [
            "acme.example",
            "acme.co.uk",
            "mail.acme.co.uk",
            "acme.github.io",
            "www.ck",
            "acme.公司.cn",
        ] {
            assert!(!is_public_suffix(owned), "{owned}");
        }
    }
}
