//! Numbers of a counter shared by every tenant, shown to one tenant without what they say of
//! the others: a keyed permutation of the numbers below 2^52 (a four-round Feistel network
//! whose round function is HMAC-SHA256, a pseudorandom permutation by Luby–Rackoff), under a
//! key of that tenant's. The gaps between a tenant's own audit events' ids would otherwise
//! count every other tenant's events in between (found by the security audit).
//!
//! Below 2^52 a masked number is still a JSON number every client reads exactly (2^53);
//! numbers from 2^52 on, which no counter here reaches, are shown as they are, so the whole
//! is a permutation of `u64`: nothing shown twice, everything shown read back.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bits of a half; a masked number has two.
const HALF: u32 = 26;
const HALF_MASK: u64 = (1 << HALF) - 1;
const DOMAIN: u64 = 1 << (2 * HALF);
const ROUNDS: u8 = 4;

/// One scope's permutation (`scope`: the tenant), under a key derived from the pepper.
pub struct IdMask {
    mac: Hmac<Sha256>,
}

impl IdMask {
    pub fn new(pepper: &[u8], label: &str, scope: &str) -> IdMask {
        // The 32-byte derived key in a block of zeros: what HMAC makes of a key shorter
        // than its block, through the constructor that cannot fail.
        let mut block = [0u8; 64];
        let key = super::lookup_digest(pepper, label, scope);
        let n = key.len().min(block.len());
        block[..n].copy_from_slice(&key[..n]);
        IdMask {
            mac: <Hmac<Sha256> as KeyInit>::new(&block.into()),
        }
    }

    /// The number shown for `id`.
    pub fn hide(&self, id: u64) -> u64 {
        if id >= DOMAIN {
            return id;
        }
        let (mut l, mut r) = (id >> HALF, id & HALF_MASK);
        for round in 0..ROUNDS {
            (l, r) = (r, l ^ self.round(round, r));
        }
        (l << HALF) | r
    }

    /// The `id` a shown number stands for.
    pub fn show(&self, shown: u64) -> u64 {
        if shown >= DOMAIN {
            return shown;
        }
        let (mut l, mut r) = (shown >> HALF, shown & HALF_MASK);
        for round in (0..ROUNDS).rev() {
            (l, r) = (r ^ self.round(round, l), l);
        }
        (l << HALF) | r
    }

    fn round(&self, round: u8, half: u64) -> u64 {
        let mut mac = self.mac.clone();
        mac.update(&[round]);
        mac.update(&half.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        u64::from_be_bytes(first) & HALF_MASK
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_scope_permutes_and_reads_back_and_hides_the_order_and_the_gaps() {
        let a = IdMask::new(&[7; 32], "audit-id", "t_a");
        let b = IdMask::new(&[7; 32], "audit-id", "t_b");
        let mut seen = std::collections::HashSet::new();
        for id in (1..5000).chain([DOMAIN - 1, DOMAIN, u64::MAX]) {
            let shown = a.hide(id);
            assert_eq!(a.show(shown), id, "{id}");
            assert!(seen.insert(shown), "{id} shown twice");
            assert_eq!(shown < DOMAIN, id < DOMAIN, "{id}");
        }
        // Consecutive ids are not shown as consecutive numbers, nor in their order.
        let shown: Vec<u64> = (1..=100).map(|id| a.hide(id)).collect();
        let ascending = shown.windows(2).filter(|w| w[0] < w[1]).count();
        assert!(
            (20..=80).contains(&ascending),
            "{ascending} of 99 ascending"
        );
        assert!(shown.windows(2).all(|w| w[0].abs_diff(w[1]) != 1));
        // Another tenant's numbers are another permutation.
        let same = (1..1000).filter(|&id| a.hide(id) == b.hide(id)).count();
        assert_eq!(same, 0);
        // Below 2^53: exact in every client's JSON numbers.
        assert!((1..1000).all(|id| a.hide(id) < 1 << 53));
    }
}
