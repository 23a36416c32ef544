#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A DNS server on loopback (UDP) answering TXT, A and AAAA queries from records the test sets:
//! enough for DKIM, SPF and DMARC look-ups (API.md §16.3–§16.4) and outbound hosts. Unknown
//! names answer NXDOMAIN; names set to fail answer SERVFAIL, as a broken zone or resolver
//! does; names set silent are never answered.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

#[derive(Default)]
struct State {
    txt: Mutex<HashMap<String, Vec<String>>>,
    a: Mutex<HashMap<String, Vec<Ipv4Addr>>>,
    aaaa: Mutex<HashMap<String, Vec<Ipv6Addr>>>,
    failing: Mutex<HashSet<String>>,
    silent: Mutex<HashSet<String>>,
    queries: Mutex<Vec<String>>,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl DnsServer {
    pub async fn start() -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                if let Some(reply) = answer(&buf[..n], &st) {
                    let _ = sock.send_to(&reply, peer).await;
                }
            }
        });
        DnsServer { addr, state }
    }

    /// Set the TXT records of a name (replacing any).
    pub fn set_txt(&self, name: &str, values: &[&str]) {
        self.state.txt.lock().unwrap().insert(
            name.trim_end_matches('.').to_ascii_lowercase(),
            values.iter().map(|v| v.to_string()).collect(),
        );
    }

    pub fn remove(&self, name: &str) {
        self.state
            .txt
            .lock()
            .unwrap()
            .remove(&name.trim_end_matches('.').to_ascii_lowercase());
    }

    /// Answer SERVFAIL for a name from now on.
    pub fn fail(&self, name: &str) {
        self.state
            .failing
            .lock()
            .unwrap()
            .insert(name.trim_end_matches('.').to_ascii_lowercase());
    }

    /// Set the A records of a name (replacing any).
    pub fn set_a(&self, name: &str, addrs: &[Ipv4Addr]) {
        self.state.a.lock().unwrap().insert(
            name.trim_end_matches('.').to_ascii_lowercase(),
            addrs.to_vec(),
        );
    }

    /// Set the AAAA records of a name (replacing any).
    pub fn set_aaaa(&self, name: &str, addrs: &[Ipv6Addr]) {
        self.state.aaaa.lock().unwrap().insert(
            name.trim_end_matches('.').to_ascii_lowercase(),
            addrs.to_vec(),
        );
    }

    /// Never answer a query of a name (a name server that hangs).
    pub fn silence(&self, name: &str) {
        self.state
            .silent
            .lock()
            .unwrap()
            .insert(name.trim_end_matches('.').to_ascii_lowercase());
    }

    /// The names asked for, in order.
    pub fn queries(&self) -> Vec<String> {
        self.state.queries.lock().unwrap().clone()
    }
}

/// The reply to one query: its question echoed and the TXT answers (each split into strings
/// of at most 255 bytes) or A and AAAA answers, NXDOMAIN for a name without records, none for a
/// silenced name.
fn answer(q: &[u8], st: &State) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    // The question: labels, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    let name = labels.join(".");
    st.queries.lock().unwrap().push(name.clone());
    if st.silent.lock().unwrap().contains(&name) {
        return None;
    }
    let txt = st.txt.lock().unwrap().get(&name).cloned();
    let a = st.a.lock().unwrap().get(&name).cloned();
    let aaaa = st.aaaa.lock().unwrap().get(&name).cloned();
    let known = txt.is_some() || a.is_some() || aaaa.is_some();
    // (type, rdata) of each answer.
    let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
    match qtype {
        16 => {
            for t in txt.unwrap_or_default() {
                let mut rdata = Vec::new();
                for chunk in t.as_bytes().chunks(255) {
                    rdata.push(chunk.len() as u8);
                    rdata.extend_from_slice(chunk);
                }
                answers.push((16, rdata));
            }
        }
        1 => {
            for ip in a.unwrap_or_default() {
                answers.push((1, ip.octets().to_vec()));
            }
        }
        28 => {
            for ip in aaaa.unwrap_or_default() {
                answers.push((28, ip.octets().to_vec()));
            }
        }
        _ => {}
    }
    let mut out = Vec::new();
    out.extend_from_slice(&q[0..2]);
    let failing = st.failing.lock().unwrap().contains(&name);
    if failing {
        answers.clear();
    }
    let rcode = match (failing, known) {
        (true, _) => 2,
        (false, false) => 3,
        (false, true) => 0,
    };
    // QR, opcode 0, AA, RD as asked; RA; the rcode.
    out.push(0x84 | (q[2] & 0x01));
    out.push(0x80 | rcode);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(q.get(12..question_end)?);
    for (kind, rdata) in answers {
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}
