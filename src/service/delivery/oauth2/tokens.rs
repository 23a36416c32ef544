//! This process's OAuth2 tokens: each relay's access tokens by settings version, and the
//! refresh tokens its provider replaced (old → new), known by the tokens themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use secrecy::{ExposeSecret, SecretString};

/// How many replaced refresh tokens of a relay are remembered (the newest ones).
const RETIRED_KEPT: usize = 16;

/// This process's tokens, by relay.
#[derive(Default)]
pub(crate) struct Tokens {
    by_relay: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
    /// The refresh tokens the provider replaced, by relay. Kept when the relay's settings
    /// change (a message read before the change still holds the old copy), dropped with
    /// the tenant.
    replaced: Mutex<HashMap<String, Replaced>>,
}

/// A relay's access tokens: that of the newest settings version read, and that of the
/// version before it (messages read before a change still send with those settings).
#[derive(Default)]
pub(super) struct Entry {
    newest: Option<Cached>,
    previous: Option<Cached>,
}

/// An access token, for the relay's settings version it was fetched with.
pub(super) struct Cached {
    pub(super) version: i64,
    pub(super) token: SecretString,
    /// Used until then.
    pub(super) until: Instant,
    pub(super) fetched: Instant,
}

impl Entry {
    /// A token for `version` still good (and, for a fresh one, fetched after
    /// `fresh_after`).
    pub(super) fn usable(
        &self,
        version: i64,
        fresh_after: Option<Instant>,
    ) -> Option<SecretString> {
        [&self.newest, &self.previous]
            .into_iter()
            .flatten()
            .find(|c| c.version == version)
            .filter(|c| Instant::now() < c.until && fresh_after.is_none_or(|a| c.fetched > a))
            .map(|c| c.token.clone())
    }

    /// Keep a token fetched: the newest version's replaces the previous one's as the
    /// previous; one older than both is not kept.
    pub(super) fn keep(&mut self, c: Cached) {
        match self.newest.as_ref().map(|n| n.version) {
            Some(v) if c.version > v => self.previous = self.newest.replace(c),
            Some(v) if c.version < v => {
                if self
                    .previous
                    .as_ref()
                    .is_none_or(|p| p.version <= c.version)
                {
                    self.previous = Some(c);
                }
            }
            _ => self.newest = Some(c),
        }
    }
}

/// A relay's refresh tokens the provider replaced while this process used it, each with
/// the token that replaced it (oldest first). A stored copy holding a replaced token is
/// behind — its store failed, or was lost to a concurrent change, or the copy was read
/// before it — so the newest its chain leads to is sent instead, and stored again. Matched
/// by the tokens themselves, not by their sealed bytes, which a data-key rotation changes;
/// chains of different logins (a check of new settings) stand side by side.
#[derive(Default)]
struct Replaced(Vec<(SecretString, SecretString)>);

impl Replaced {
    /// The newest token the replacements lead to from `token` (`token` itself when none
    /// replaced it).
    fn newest(&self, token: &str) -> String {
        let mut t = token.to_string();
        // (No token is replaced twice, and none that is live again stays replaced: the
        // chain has no cycle, and no more steps than pairs.)
        for _ in 0..self.0.len() {
            match self.0.iter().find(|(old, _)| old.expose_secret() == t) {
                Some((_, new)) => t = new.expose_secret().to_string(),
                None => break,
            }
        }
        t
    }

    /// The provider answered `new` to a request that sent `old`.
    fn record(&mut self, old: &str, new: &str) {
        // A token answered is live, whatever it replaced before.
        self.0
            .retain(|(o, _)| o.expose_secret() != old && o.expose_secret() != new);
        self.0.push((
            SecretString::from(old.to_string()),
            SecretString::from(new.to_string()),
        ));
        let over = self.0.len().saturating_sub(RETIRED_KEPT);
        self.0.drain(..over);
    }
}

impl Tokens {
    pub(super) fn entry(&self, key: &str) -> Arc<tokio::sync::Mutex<Entry>> {
        let mut map = self.by_relay.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(key.to_string()).or_default())
    }

    /// The refresh token to send for a stored copy holding `stored`: the newest its
    /// replacements lead to (`true`: the copy is behind).
    pub(super) fn newest(&self, key: &str, stored: Option<&str>) -> (bool, Option<String>) {
        let Some(stored) = stored else {
            return (false, None);
        };
        let map = self.replaced.lock().unwrap_or_else(|p| p.into_inner());
        let newest = map
            .get(key)
            .map_or_else(|| stored.to_string(), |r| r.newest(stored));
        (newest != stored, Some(newest))
    }

    /// Record a request's answer: `sent` replaced by `answered` when they differ. The
    /// refresh token to store, if any: the newest, when the provider replaced the one
    /// sent or the stored copy was `behind`.
    pub(super) fn answered(
        &self,
        key: &str,
        sent: Option<&str>,
        answered: Option<&str>,
        behind: bool,
    ) -> Option<String> {
        let sent = sent?;
        let newest = answered.unwrap_or(sent);
        if newest != sent {
            let mut map = self.replaced.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().record(sent, newest);
        } else if !behind {
            return None;
        }
        Some(newest.to_string())
    }

    /// Whether a stored copy holding `stored` is behind `newest`: one of the tokens that
    /// led to it.
    pub(super) fn behind(&self, key: &str, stored: Option<&str>, newest: &str) -> bool {
        let (behind, sent) = self.newest(key, stored);
        behind && sent.as_deref() == Some(newest)
    }

    /// Forget all of a deleted tenant's relays. (A change of a relay's settings needs no
    /// forgetting: its tokens are kept by settings version, and its replaced refresh
    /// tokens are still known to the messages read before the change.)
    pub fn forget(&self, tenant: &str) {
        let own = format!("{tenant}/");
        let theirs = |k: &String| k == tenant || k.starts_with(&own);
        self.by_relay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| !theirs(k));
        self.replaced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| !theirs(k));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_chain_of_replaced_tokens_leads_to_the_newest_and_keeps_no_cycle() {
        let mut r = Replaced::default();
        assert_eq!(r.newest("a"), "a");
        r.record("a", "b");
        r.record("b", "c");
        // Another login's chain beside it.
        r.record("x", "y");
        assert_eq!(
            (r.newest("a"), r.newest("b"), r.newest("c")),
            ("c".into(), "c".into(), "c".into())
        );
        assert_eq!(r.newest("x"), "y");
        // A token answered again is live again: no cycle, and it leads nowhere.
        r.record("c", "a");
        assert_eq!(
            (r.newest("a"), r.newest("b"), r.newest("c")),
            ("a".into(), "a".into(), "a".into())
        );
        // The newest RETIRED_KEPT pairs are kept: the oldest starts go first.
        let mut long = Replaced::default();
        for i in 0..RETIRED_KEPT + 2 {
            long.record(&format!("t{i}"), &format!("t{}", i + 1));
        }
        let last = format!("t{}", RETIRED_KEPT + 2);
        assert_eq!(long.newest("t0"), "t0");
        assert_eq!(long.newest("t1"), "t1");
        assert_eq!(long.newest("t2"), last);
    }

    #[test]
    fn an_entry_keeps_the_newest_settings_token_and_the_one_before() {
        let cached = |version, token: &str| Cached {
            version,
            token: SecretString::from(token.to_string()),
            until: Instant::now() + Duration::from_secs(600),
            fetched: Instant::now(),
        };
        let got = |e: &Entry, v| e.usable(v, None).map(|t| t.expose_secret().to_string());
        let mut e = Entry::default();
        e.keep(cached(3, "v3"));
        e.keep(cached(4, "v4"));
        assert_eq!(
            (got(&e, 3), got(&e, 4)),
            (Some("v3".into()), Some("v4".into()))
        );
        // A read older than both is not kept; one of the previous version replaces its token.
        e.keep(cached(2, "v2"));
        e.keep(cached(3, "v3b"));
        assert_eq!((got(&e, 2), got(&e, 3)), (None, Some("v3b".into())));
        // A newer version moves the newest to previous.
        e.keep(cached(5, "v5"));
        assert_eq!(
            (got(&e, 3), got(&e, 4), got(&e, 5)),
            (None, Some("v4".into()), Some("v5".into()))
        );
        // A fresh token is one fetched after it was asked for.
        let asked = Instant::now() + Duration::from_secs(1);
        assert!(e.usable(5, Some(asked)).is_none());
    }
}
