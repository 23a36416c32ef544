//! The soak's outside checker: what every answer, every received message and every code's
//! final record must say once the faults have stopped (docs/reliability.md).

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::load::Record;
use super::Fault;

/// A code's record as `GET /v1/otp/{key}` gave it after the run.
#[derive(Clone, Default)]
pub struct Final {
    pub status: String,
    pub delivery: String,
    pub attempts_used: u64,
}

impl Final {
    pub fn from_json(v: &Value) -> Final {
        Final {
            status: v["status"].as_str().unwrap_or_default().to_string(),
            delivery: v["delivery"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            attempts_used: v["attempts_used"].as_u64().unwrap_or(0),
        }
    }
}

/// A code's states (API.md §1) and a delivery's settled states (§10, §16, §19.2).
const CODE_STATES: [&str; 7] = [
    "pending",
    "verified",
    "expired",
    "exhausted",
    "superseded",
    "cancelled",
    "failed",
];
const SETTLED_DELIVERIES: [&str; 4] = ["sent", "failed", "unknown", "bounced"];

#[derive(Serialize, Default)]
pub struct Findings {
    pub codes_minted: usize,
    pub verified: usize,
    pub messages_received: usize,
    pub delivery_states: HashMap<String, usize>,
    pub code_states: HashMap<String, usize>,
    pub statuses: HashMap<String, u64>,
    pub transport_errors: u64,
    pub violations: Vec<String>,
}

/// Guesses an invariant allows at most per key, and whether a 5xx fits a fault.
pub fn check(
    record: &Record,
    finals: &HashMap<String, Final>,
    received: &HashMap<String, Vec<String>>,
    faults: &[Fault],
    max_attempts: &[u64],
    faulty_tenants: &HashSet<usize>,
) -> Findings {
    let mut f = Findings {
        codes_minted: record.minted.len(),
        transport_errors: record.transport_errors,
        messages_received: received.values().map(Vec::len).sum(),
        ..Findings::default()
    };
    let mut v = Vec::new();
    for a in &record.answers {
        *f.statuses
            .entry(format!("{} {}", a.op, a.status))
            .or_default() += 1;
        if a.status < 500 {
            continue;
        }
        let during = |kind: &str, after: f64| {
            faults
                .iter()
                .any(|x| x.kind.starts_with(kind) && a.at >= x.start && a.at <= x.end + after)
        };
        let fits = match a.status {
            // The database was cut (or an instance was starting while it was).
            503 => during("cut", 5.0),
            // A sync mint (or resend) whose relay misbehaved: the contract's answer.
            502 => {
                (a.op == "mint" || a.op == "resend")
                    && a.code == "delivery_failed"
                    && faulty_tenants.contains(&a.tenant)
                    && during("relay", 5.0)
            }
            _ => false,
        };
        if !fits {
            v.push(format!(
                "{} answered {} ({}) at {:.1} s, outside any fault that explains it",
                a.op, a.status, a.code, a.at
            ));
        }
    }
    for m in &record.minted {
        let Some(fin) = finals.get(&m.key) else {
            v.push(format!(
                "{}: answered {} but no record found after the run",
                m.recipient, m.status
            ));
            continue;
        };
        if !CODE_STATES.contains(&fin.status.as_str())
            || !SETTLED_DELIVERIES.contains(&fin.delivery.as_str())
        {
            v.push(format!(
                "{}: status {:?}, delivery {:?}: not a state the contract names for a settled code",
                m.recipient, fin.status, fin.delivery
            ));
        }
        *f.code_states.entry(fin.status.clone()).or_default() += 1;
        *f.delivery_states.entry(fin.delivery.clone()).or_default() += 1;
        let codes = received.get(&m.recipient).cloned().unwrap_or_default();
        let tries = record.verifies.get(&m.key).cloned().unwrap_or_default();
        let ok = tries.iter().filter(|t| t.1 == Some(200)).count();
        let judged = tries
            .iter()
            .filter(|t| matches!(t.1, Some(200) | Some(422)))
            .count() as u64;
        let max = max_attempts[m.tenant];
        if ok > 1 {
            v.push(format!("{}: verified {ok} times", m.recipient));
        }
        if tries
            .iter()
            .any(|t| t.1 == Some(200) && !codes.contains(&t.0))
        {
            v.push(format!(
                "{}: a code it was never sent verified",
                m.recipient
            ));
        }
        if fin.status == "verified" {
            f.verified += 1;
            if !tries.iter().any(|t| codes.contains(&t.0)) {
                v.push(format!(
                    "{}: verified, but its right code was never tried",
                    m.recipient
                ));
            }
        }
        if judged > max || fin.attempts_used > max {
            v.push(format!(
                "{}: {judged} guesses judged, {} attempts recorded, limit {max}",
                m.recipient, fin.attempts_used
            ));
        }
        if matches!(fin.delivery.as_str(), "queued" | "sending" | "") {
            v.push(format!(
                "{}: delivery still {:?} after the run settled",
                m.recipient, fin.delivery
            ));
        }
        if (m.status == 201 || fin.delivery == "sent") && codes.is_empty() {
            v.push(format!(
                "{}: answered {}, delivery {:?}, but the relay has no message",
                m.recipient, m.status, fin.delivery
            ));
        }
        // No message is ever sent twice (API.md §19.2): a resend is a new code.
        let mut seen = HashSet::new();
        if codes.iter().any(|c| !seen.insert(c)) {
            v.push(format!(
                "{}: one message delivered twice, delivery recorded {:?}",
                m.recipient, fin.delivery
            ));
        }
    }
    f.violations = v;
    f
}

#[cfg(test)]
mod tests {
    use super::super::load::{Answer, Minted};
    use super::*;

    fn minted(key: &str, recipient: &str) -> Minted {
        Minted {
            key: key.into(),
            tenant: 0,
            recipient: recipient.into(),
            status: 201,
        }
    }

    fn fin(status: &str, delivery: &str, attempts_used: u64) -> Final {
        Final {
            status: status.into(),
            delivery: delivery.into(),
            attempts_used,
        }
    }

    fn answer(op: &'static str, status: u16, code: &str, at: f64) -> Answer {
        Answer {
            at,
            op,
            status,
            code: code.into(),
            tenant: 0,
        }
    }

    fn run(
        record: &Record,
        finals: &[(&str, Final)],
        received: &[(&str, &[&str])],
        faults: &[Fault],
    ) -> Vec<String> {
        let finals = finals
            .iter()
            .map(|(k, f)| (k.to_string(), f.clone()))
            .collect();
        let received = received
            .iter()
            .map(|(r, c)| (r.to_string(), c.iter().map(|c| c.to_string()).collect()))
            .collect();
        check(
            record,
            &finals,
            &received,
            faults,
            &[3],
            &HashSet::from([0]),
        )
        .violations
    }

    #[test]
    fn a_clean_run_has_no_violation_and_each_broken_invariant_is_found() {
        let mut r = Record::default();
        r.minted.push(minted("k1", "a@x.example"));
        r.verifies
            .insert("k1".into(), vec![("111111".into(), Some(200))]);
        let clean = run(
            &r,
            &[("k1", fin("verified", "sent", 1))],
            &[("a@x.example", &["111111"])],
            &[],
        );
        assert!(clean.is_empty(), "{clean:?}");

        // Verified twice.
        let mut twice = Record::default();
        twice.minted.push(minted("k1", "a@x.example"));
        twice.verifies.insert(
            "k1".into(),
            vec![("111111".into(), Some(200)), ("111111".into(), Some(200))],
        );
        let v = run(
            &twice,
            &[("k1", fin("verified", "sent", 2))],
            &[("a@x.example", &["111111"])],
            &[],
        );
        assert!(v.iter().any(|v| v.contains("verified 2 times")), "{v:?}");

        // A wrong code verified; more guesses judged than allowed.
        let mut wrong = Record::default();
        wrong.minted.push(minted("k1", "a@x.example"));
        wrong.verifies.insert(
            "k1".into(),
            vec![
                ("000001".into(), Some(422)),
                ("000002".into(), Some(422)),
                ("000003".into(), Some(422)),
                ("000004".into(), Some(200)),
            ],
        );
        let v = run(
            &wrong,
            &[("k1", fin("verified", "sent", 4))],
            &[("a@x.example", &["111111"])],
            &[],
        );
        assert!(v.iter().any(|v| v.contains("never sent verified")), "{v:?}");
        assert!(v.iter().any(|v| v.contains("limit 3")), "{v:?}");

        // One message delivered twice, not recorded unknown; a 201 without a message; a
        // delivery never settled; a key without a record.
        let mut r = Record::default();
        r.minted.push(minted("k1", "a@x.example"));
        r.minted.push(minted("k2", "b@x.example"));
        r.minted.push(minted("k3", "c@x.example"));
        r.minted.push(minted("k4", "d@x.example"));
        let v = run(
            &r,
            &[
                ("k1", fin("pending", "sent", 0)),
                ("k2", fin("pending", "sent", 0)),
                ("k3", fin("pending", "queued", 0)),
            ],
            &[("a@x.example", &["1", "1"]), ("c@x.example", &["3"])],
            &[],
        );
        assert!(v
            .iter()
            .any(|v| v.starts_with("a@x.example: one message delivered twice")));
        assert!(v.iter().any(|v| v.starts_with("b@x.example: answered 201")));
        assert!(v
            .iter()
            .any(|v| v.starts_with("c@x.example: delivery still")));
        assert!(v
            .iter()
            .any(|v| v.starts_with("d@x.example: answered 201 but no record")));
        // Recorded unknown, a duplicate is still one (a resend is a new code).
        let v = run(
            &r,
            &[("k1", fin("pending", "unknown", 0))],
            &[("a@x.example", &["1", "1"])],
            &[],
        );
        assert!(v
            .iter()
            .any(|v| v.starts_with("a@x.example: one message delivered twice")));
        // A state the contract does not name.
        let v = run(
            &r,
            &[("k1", fin("lost", "sent", 0))],
            &[("a@x.example", &["1"])],
            &[],
        );
        assert!(
            v.iter()
                .any(|v| v.contains("not a state the contract names")),
            "{v:?}"
        );
    }

    #[test]
    fn a_5xx_passes_only_inside_the_fault_that_explains_it() {
        let cut = Fault {
            kind: "cut database".into(),
            start: 10.0,
            end: 12.0,
        };
        let relay = Fault {
            kind: "relay KeepAndStall".into(),
            start: 20.0,
            end: 22.0,
        };
        let mut r = Record {
            answers: vec![
                answer("verify", 503, "overloaded", 11.0),
                answer("mint", 502, "delivery_failed", 21.0),
            ],
            ..Record::default()
        };
        assert!(run(&r, &[], &[], &[cut.clone(), relay.clone()]).is_empty());
        r.answers = vec![
            answer("verify", 503, "overloaded", 30.0),
            answer("mint", 502, "delivery_failed", 11.0),
            answer("verify", 500, "internal", 11.0),
        ];
        assert_eq!(run(&r, &[], &[], &[cut, relay]).len(), 3);
    }
}
