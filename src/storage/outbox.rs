//! The outbox aggregate: the durable work of sending a code's message — claimed tenant by
//! tenant with a lease, swept when its code ended first or its sync sender died, released
//! at shutdown. Settled once and only by the lease's holder (sent, retry later, failed):
//! `storage/settle.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use super::cells::{delivery_mode_from, status_from, Cells};
use super::integration::NewEvent;
use super::rules::SweepVerdict;
use super::{Lease, StoreError};
use crate::domain::delivery::{DeliveryMode, DeliveryReason};
use crate::domain::keys::TenantId;
use crate::domain::recipient::Channel;
use crate::domain::Millis;

/// How a claim shares its rows out between tenants — the same for both outboxes (messages,
/// webhook events): tenants in id order from a cursor, each up to what it may still have
/// running here, never a key this process must not take.
#[derive(Debug, Clone)]
pub struct Fairness<K> {
    /// At most this many rows in all.
    pub limit: u32,
    /// What each tenant may still start here (free sessions, free requests); a tenant not
    /// listed may take `default_cap`; a tenant at its ceiling (0) is skipped without a
    /// query.
    pub caps: HashMap<String, u32>,
    pub default_cap: u32,
    /// Never claimed here, with their tenants (messages this process is sending or whose
    /// outcome it has not recorded yet, events it is delivering).
    pub skip: HashMap<K, String>,
    /// Never claimed here either, without asking for more rows: messages whose send is
    /// under way here (their rows are leased, so no claim finds them, but for one whose
    /// lease ran out and that this process's own sweep gave back while it waited).
    pub running: HashSet<K>,
    /// Tenants are visited in id order, starting after this one and wrapping around, so
    /// claims that stop at `limit` take turns between tenants.
    pub after: Option<String>,
}

/// What a sender asks for in one claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub now: Millis,
    pub lease: Lease,
    /// `fair.caps`: what each tenant's email may still start here.
    pub fair: Fairness<Vec<u8>>,
    /// What each tenant's messages of another channel (text messages) may still start
    /// here (their first transport's window is not the email one's: API.md §17.7); a
    /// channel or tenant not listed: `default_cap`.
    pub other_caps: BTreeMap<Channel, HashMap<String, u32>>,
}

impl ClaimRequest {
    /// Every channel's lane and the caps its tenants have, in `Channel::ALL`'s order.
    pub fn lanes(&self) -> Vec<(Channel, &HashMap<String, u32>)> {
        static NONE: std::sync::LazyLock<HashMap<String, u32>> =
            std::sync::LazyLock::new(HashMap::new);
        Channel::ALL
            .into_iter()
            .map(|ch| match ch {
                Channel::Email => (ch, &self.fair.caps),
                other => (other, self.other_caps.get(&other).unwrap_or(&NONE)),
            })
            .collect()
    }
}

/// What a claim leased, and where the next claim starts.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub jobs: Vec<OutboxJob>,
    pub next_after: Option<String>,
}

/// One claimed message.
#[derive(Debug, Clone)]
pub struct OutboxJob {
    pub key_digest: Vec<u8>,
    pub tenant_id: TenantId,
    pub recipient: String,
    pub payload: Vec<u8>,
    /// Attempts made before this one.
    pub attempts: u32,
    pub expires_at: Millis,
    pub mode: DeliveryMode,
    pub channel: Channel,
}

/// What the outbox reports about itself for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub depth: u64,
    /// How long the longest-waiting due message has been due.
    pub oldest_due_ms: Millis,
}

/// A row the sweep will settle, as read (its payload only when its code expired: the
/// service opens it for the `otp.delivery_failed` event).
#[derive(Debug, Clone)]
pub struct SweepCandidate {
    pub tenant_id: TenantId,
    pub key_digest: Vec<u8>,
    pub verdict: SweepVerdict,
    pub payload: Option<Vec<u8>>,
}

/// A candidate to settle, with the event to write in the same transaction.
#[derive(Debug, Clone)]
pub struct SweepItem {
    pub key_digest: Vec<u8>,
    pub verdict: SweepVerdict,
    pub event: Option<NewEvent>,
}

/// Rows a sweep reads at most at once.
pub const SWEEP_BATCH: u32 = 500;

/// What a code's delivery record keeps of an attempt besides its status and reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptRecord {
    /// Attempts made so far, this one included.
    pub attempts: u32,
    /// The transport that accepted: `smtp`, `smtp_fallback`, `http`, `provider:postmark`, …
    pub transport: Option<String>,
    /// The provider's id of the accepted message (API.md §15.2).
    pub provider_message_id: Option<String>,
    /// A failure's code beyond its reason: the provider's own error code, or
    /// `oauth2_invalid_grant` and the like.
    pub detail_code: Option<String>,
    /// A last attempt whose outcome nobody can know (API.md §19.2): given up as `unknown`.
    pub outcome_unknown: bool,
}

/// Why an attempt failed, as its code's delivery records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptFailure {
    pub reason: DeliveryReason,
    /// This attempt may have reached the relay, endpoint or provider: the send's quota
    /// charge is kept.
    pub maybe_delivered: bool,
}

/// Claims, the sweep and leases, which each backend does its own way; what a claim's holder
/// records of its attempt is `SettleStore`, written once.
pub trait OutboxStore {
    /// Lease due rows of live, pending async codes of enabled tenants not in test mode (a
    /// tenant made a test tenant sends nothing, not even what it queued before), tenant by
    /// tenant (see [`ClaimRequest`]); only the rows leased are read whole.
    fn claim_outbox(&self, c: &ClaimRequest) -> Result<Claimed, StoreError>;
    /// Rows nobody holds whose code is no longer live, sync rows whose sender's lease ran
    /// out, and async rows whose send began under a lease that ran out (at most
    /// [`SWEEP_BATCH`]); with `among`, only those rows of these keys.
    fn sweep_candidates(
        &self,
        now: Millis,
        among: Option<&[Vec<u8>]>,
    ) -> Result<Vec<SweepCandidate>, StoreError>;
    /// Settle swept rows in one transaction, each only if its verdict still holds, with
    /// its event; returns how many were settled.
    fn settle_swept(&self, items: &[SweepItem], now: Millis) -> Result<usize, StoreError>;
    /// Give back the leases `owner` holds on async rows of live codes, but those `keep`
    /// names (shutdown: a restart or another instance sends them at once; stray leases: see
    /// `Delivery::release_strays`). `keep` is asked once the rows are read, in the same
    /// transaction with the rows locked: a row leased here after that read (an async mint's,
    /// held before its store) is not among them, and one read was in `keep` already if it is
    /// still this process's to send. A lease that ran out, or a code that ended, stays for
    /// the sweep, which knows an interrupted send from one never begun. Returns how many.
    fn release_leases(&self, owner: &str, keep: Keep, now: Millis) -> Result<usize, StoreError>;
    /// Give back every async row whose lease ran out before its holder began the send
    /// (`SettleStore::outbox_send_started`, written just before the message leaves): its
    /// holder died or lost the database while the message waited for a session, or while
    /// its relay was at MAIL, RCPT or DATA, so nothing of it left and another sender takes
    /// it (API.md §19.2). Returns how many.
    fn release_unstarted(&self, now: Millis) -> Result<usize, StoreError>;
    /// End now every lease `owner` still holds (shutdown, past its grace, once what could
    /// be given back was: a send still under way here, an outcome not yet recorded, a
    /// message whose code ended), as if it had run out, so that the sweep settles each as
    /// it would any lease that ran out (API.md §19.4). Returns the keys.
    fn run_out_leases(&self, owner: &str, now: Millis) -> Result<Vec<Vec<u8>>, StoreError>;
}

/// The leases [`OutboxStore::release_leases`] must not give back, asked after it read the
/// rows leased.
pub type Keep = std::sync::Arc<dyn Fn() -> Vec<Vec<u8>> + Send + Sync>;

/// A sweep row's verdict (`None`: the row is live after all). The row: key, tenant,
/// delivery mode, status, attempts, max attempts, expiry, payload, whether its send began
/// under a lease that ran out.
pub(crate) fn sweep_verdict_of(
    r: &dyn Cells,
    now: Millis,
) -> Result<Option<SweepVerdict>, StoreError> {
    Ok(super::rules::sweep_verdict(
        delivery_mode_from(&r.text(2)?)?,
        r.flag(8)?,
        status_from(&r.text(3)?)?,
        r.count(4)?,
        r.count(5)?,
        r.int(6)?,
        now,
    ))
}

/// A sweep row as a candidate (`None`: live after all; see [`sweep_verdict_of`]).
pub(crate) fn sweep_candidate_of(
    r: &dyn Cells,
    now: Millis,
) -> Result<Option<SweepCandidate>, StoreError> {
    let Some(verdict) = sweep_verdict_of(r, now)? else {
        return Ok(None);
    };
    Ok(Some(SweepCandidate {
        key_digest: r.bytes(0)?,
        tenant_id: TenantId::from_trusted(r.text(1)?),
        payload: match verdict {
            SweepVerdict::Expired => Some(r.bytes(7)?),
            _ => None,
        },
        verdict,
    }))
}

/// Tenants a claim visits at most.
const CLAIM_TENANTS: usize = 1024;

/// The keys a claim takes, decided once for both backends and both outboxes (see
/// [`Fairness`]). A tenant's work may be in several lanes, each with its own caps (the
/// message outbox has one per channel: each channel's first transport has a window of its
/// own; webhook events have one lane, `f.caps`); a tenant not in a lane's caps may take
/// `f.default_cap` there. `next_tenant(after)` names the first tenant with rows after
/// `after`; `due_keys(tenant, lane, n)` the tenant's `n` oldest claimable keys of the lane.
/// Returns the keys and the cursor for the next claim.
pub(crate) fn plan_claim<K: Eq + Hash + Clone, L: Copy>(
    f: &Fairness<K>,
    lanes: &[(L, &HashMap<String, u32>)],
    mut next_tenant: impl FnMut(Option<&str>) -> Result<Option<String>, StoreError>,
    mut due_keys: impl FnMut(&str, L, u32) -> Result<Vec<K>, StoreError>,
) -> Result<(Vec<K>, Option<String>), StoreError> {
    let mut skipped: HashMap<&str, usize> = HashMap::new();
    for tenant in f.skip.values() {
        *skipped.entry(tenant.as_str()).or_default() += 1;
    }
    let mut keys = Vec::new();
    let mut cursor = f.after.clone();
    let mut wrapped = f.after.is_none();
    let mut seen = HashSet::new();
    while keys.len() < f.limit as usize && seen.len() < CLAIM_TENANTS {
        let tenant = match next_tenant(cursor.as_deref())? {
            Some(t) => t,
            None if !wrapped => {
                wrapped = true;
                cursor = None;
                continue;
            }
            None => break,
        };
        if !seen.insert(tenant.clone()) {
            break;
        }
        cursor = Some(tenant.clone());
        for (lane, caps) in lanes {
            let cap = caps.get(&tenant).copied().unwrap_or(f.default_cap);
            let room = (f.limit as usize - keys.len()).min(cap as usize);
            if room == 0 {
                continue;
            }
            // The tenant's skipped keys may be among its oldest: ask for as many more.
            let more = skipped.get(tenant.as_str()).copied().unwrap_or(0);
            let ask = u32::try_from(room + more).unwrap_or(u32::MAX);
            keys.extend(
                due_keys(&tenant, *lane, ask)?
                    .into_iter()
                    .filter(|k| !f.skip.contains_key(k) && !f.running.contains(k))
                    .take(room),
            );
        }
    }
    Ok((keys, cursor))
}

/// Which of a process's leased messages [`super::SettleStore::settle_unsent_sync`] gives up.
#[derive(Debug, Clone)]
pub enum Unsent {
    /// Every sync one but these (shutdown: those still held by a send under way).
    AllBut(Vec<Vec<u8>>),
    /// Only the message of this key (digest), sync or async.
    Only(Vec<u8>),
}

impl Unsent {
    /// The one key it names, or none.
    pub(super) fn only(&self) -> &[u8] {
        match self {
            Unsent::Only(key) => key,
            Unsent::AllBut(_) => &[],
        }
    }

    pub(super) fn takes(&self, key_digest: &[u8]) -> bool {
        match self {
            Unsent::AllBut(keep) => !keep.iter().any(|k| k == key_digest),
            Unsent::Only(key) => key == key_digest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_is_a_lane_of_a_claim_with_its_own_caps() {
        let req = ClaimRequest {
            now: 0,
            lease: Lease {
                owner: "me".into(),
                for_ms: 1,
            },
            fair: request(8, &[("t1", 3)], None),
            other_caps: [(Channel::Sms, [("t1".to_string(), 1)].into())].into(),
        };
        let lanes = req.lanes();
        assert_eq!(
            lanes.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            Channel::ALL.to_vec()
        );
        let cap = |ch: Channel| {
            lanes
                .iter()
                .find(|(c, _)| *c == ch)
                .map(|(_, m)| m.get("t1").copied())
        };
        assert_eq!(cap(Channel::Email), Some(Some(3)));
        assert_eq!(cap(Channel::Sms), Some(Some(1)));
        let none = ClaimRequest {
            other_caps: BTreeMap::new(),
            ..req.clone()
        };
        assert!(
            none.lanes()
                .iter()
                .all(|(c, m)| *c == Channel::Email || m.is_empty()),
            "a channel without caps is still a lane, at the default cap"
        );
    }

    fn request(limit: u32, caps: &[(&str, u32)], after: Option<&str>) -> Fairness<Vec<u8>> {
        Fairness {
            limit,
            caps: caps.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            default_cap: 2,
            skip: HashMap::new(),
            running: HashSet::new(),
            after: after.map(str::to_string),
        }
    }

    /// Tenants a, b, c with 5 due keys each, named `<tenant><n>`.
    fn plan(c: &Fairness<Vec<u8>>) -> (Vec<String>, Option<String>) {
        let tenants = ["a", "b", "c"];
        let (keys, next) = plan_claim(
            c,
            &[((), &c.caps)],
            |after| {
                Ok(tenants
                    .iter()
                    .find(|t| after.is_none_or(|a| **t > a))
                    .map(|t| t.to_string()))
            },
            |t, (), n| {
                Ok((0..5.min(n))
                    .map(|i| format!("{t}{i}").into_bytes())
                    .collect())
            },
        )
        .unwrap();
        (
            keys.into_iter()
                .map(|k| String::from_utf8(k).unwrap())
                .collect(),
            next,
        )
    }

    #[test]
    fn a_claim_takes_each_tenant_up_to_its_free_sessions_and_skips_full_ones() {
        let (keys, next) = plan(&request(100, &[("b", 0), ("c", 3)], None));
        assert_eq!(keys, ["a0", "a1", "c0", "c1", "c2"]);
        assert_eq!(next.as_deref(), Some("c"));
    }

    #[test]
    fn claims_that_stop_at_their_limit_take_turns_between_tenants() {
        let (keys, next) = plan(&request(3, &[], None));
        assert_eq!(keys, ["a0", "a1", "b0"]);
        assert_eq!(next.as_deref(), Some("b"));
        // The next claim starts after b, and wraps around to a.
        let (keys, _) = plan(&request(3, &[], next.as_deref()));
        assert_eq!(keys, ["c0", "c1", "a0"]);
    }

    #[test]
    fn each_lane_of_a_tenant_is_claimed_within_its_own_caps() {
        // Email of tenant a has no free session; its text messages' window has three.
        let c = request(100, &[("a", 0)], None);
        let sms: HashMap<String, u32> = [("a".to_string(), 3)].into();
        let (keys, _) = plan_claim(
            &c,
            &[("email", &c.caps), ("sms", &sms)],
            |after| {
                Ok(["a"]
                    .iter()
                    .find(|t| after.is_none_or(|a| **t > a))
                    .map(|t| t.to_string()))
            },
            |t, lane, n| {
                Ok((0..5.min(n))
                    .map(|i| format!("{t}-{lane}{i}").into_bytes())
                    .collect())
            },
        )
        .unwrap();
        let keys: Vec<String> = keys
            .into_iter()
            .map(|k| String::from_utf8(k).unwrap())
            .collect();
        assert_eq!(keys, ["a-sms0", "a-sms1", "a-sms2"]);
    }

    #[test]
    fn keys_awaiting_their_record_or_being_sent_here_are_never_claimed() {
        let mut c = request(100, &[("b", 0), ("c", 0)], None);
        c.skip.insert(b"a0".to_vec(), "a".into());
        let (keys, _) = plan(&c);
        assert_eq!(keys, ["a1", "a2"]);
        // A key being sent here is passed over without asking for more rows (its row is
        // leased, so no claim finds it, but for one this process's sweep gave back).
        let mut c = request(100, &[("b", 0), ("c", 0)], None);
        c.running.insert(b"a0".to_vec());
        let (keys, _) = plan(&c);
        assert_eq!(keys, ["a1"]);
    }
}
