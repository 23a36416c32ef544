//! The last wrong code typed on each hosted page, in this process — as a keyed digest, never
//! the code. A page's form posted again (a reload after a wrong code, a double click's second
//! post) would otherwise spend a second attempt on a guess already known to be wrong (API.md
//! §14.1: a guess is an attempt). A form the page made, posted after guesses were spent
//! since it was made (it carries the count it was made with), with the guess last found
//! wrong, is answered as it was, spending nothing; any other guess, and any form not made by
//! the pages, is checked as always. A page's verifies take turns in this process
//! (`Codes::hosted_verify`), so a double click's two posts are one after the other.
//! Another instance's wrong guesses are not known here: there a repeat is checked (and
//! spends an attempt), as before.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::domain::Millis;

/// Sessions remembered at most; past it the oldest go first.
const MAX_SESSIONS: usize = 10_000;

pub(crate) struct PageGuesses {
    /// A key of this process's, so that the digests say nothing outside it.
    key: [u8; 32],
    /// Session id → the digest of its last wrong guess, and until when it is kept (its
    /// session's end).
    last: Mutex<HashMap<String, ([u8; 32], Millis)>>,
}

impl Default for PageGuesses {
    fn default() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        PageGuesses {
            key,
            last: Mutex::new(HashMap::new()),
        }
    }
}

impl PageGuesses {
    fn last(&self) -> MutexGuard<'_, HashMap<String, ([u8; 32], Millis)>> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The digest of a guess at one code of a session: `code` names the code (its key and how
    /// many times it was sent again), so a guess found wrong for one code is never taken as
    /// wrong for the next. `None` only if HMAC refused its key, which it never does.
    fn digest(&self, session: &str, code: &[u8], guess: &str) -> Option<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).ok()?;
        for part in [session.as_bytes(), code, guess.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        Some(mac.finalize().into_bytes().into())
    }

    /// Whether `guess` is the session's last wrong one, for the code `code`.
    pub(crate) fn was_wrong(&self, session: &str, code: &[u8], guess: &str, now: Millis) -> bool {
        let Some(d) = self.digest(session, code, guess) else {
            return false;
        };
        self.last()
            .get(session)
            .is_some_and(|(last, until)| now < *until && crate::crypto::secrets_equal(last, &d))
    }

    /// `guess` was checked against the code `code` and is wrong; kept until `until` (the
    /// session's end).
    pub(crate) fn wrong(
        &self,
        session: &str,
        code: &[u8],
        guess: &str,
        until: Millis,
        now: Millis,
    ) {
        let Some(d) = self.digest(session, code, guess) else {
            return;
        };
        let mut last = self.last();
        if last.len() >= MAX_SESSIONS && !last.contains_key(session) {
            last.retain(|_, (_, u)| *u > now);
            if last.len() >= MAX_SESSIONS {
                if let Some(oldest) = last
                    .iter()
                    .min_by_key(|(_, (_, u))| *u)
                    .map(|(k, _)| k.clone())
                {
                    last.remove(&oldest);
                }
            }
        }
        last.insert(session.to_string(), (d, until));
    }

    /// The session's code changed (a new one sent) or it ended: nothing of it is kept.
    pub(crate) fn forget(&self, session: &str) {
        self.last().remove(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sessions_last_wrong_guess_at_its_code_is_known_until_it_ends_or_is_forgotten() {
        let g = PageGuesses::default();
        let code = b"key-1#0";
        assert!(!g.was_wrong("hs_a", code, "123456", 0));
        g.wrong("hs_a", code, "123456", 1_000, 0);
        assert!(g.was_wrong("hs_a", code, "123456", 10));
        assert!(!g.was_wrong("hs_a", code, "654321", 10), "another guess");
        assert!(
            !g.was_wrong("hs_a", b"key-1#1", "123456", 10),
            "another code"
        );
        assert!(!g.was_wrong("hs_b", code, "123456", 10), "another session");
        assert!(
            !g.was_wrong("hs_a", code, "123456", 1_000),
            "past its session's end"
        );
        g.wrong("hs_a", code, "654321", 1_000, 10);
        assert!(
            !g.was_wrong("hs_a", code, "123456", 20),
            "only the last one"
        );
        g.forget("hs_a");
        assert!(!g.was_wrong("hs_a", code, "654321", 20));
    }
}
