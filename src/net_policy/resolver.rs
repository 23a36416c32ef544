//! Name look-ups — of outbound hosts (relays, endpoints, providers), with the system's
//! configuration (`/etc/resolv.conf`, `/etc/hosts`), and for the domain check, with
//! `dns.resolver` when set — through hickory's asynchronous resolver. Not first through
//! `getaddrinfo`: tokio runs that on its blocking pool, which every database call shares,
//! and a name server that never answers holds a thread a look-up for as long as libc waits,
//! after its caller gave up — hosts under such a zone, registered in a burst (a webhook URL,
//! a relay), could starve the database calls of every tenant. Here a look-up is a few
//! sockets and a timer.
//!
//! A name the name servers answer has no address (or every name, where the system's
//! configuration cannot be read) is asked of `getaddrinfo` too, at most [`SYSTEM_LOOKUPS`]
//! at a time, so that names only the system's other sources know still resolve; a name
//! server that does not answer is not asked again that way. The blocking pool keeps nearly
//! all its threads.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::Resolver;

/// One query's wait for an answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// A host's whole look-up (its A and AAAA queries, one retry each).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// `getaddrinfo` look-ups at a time (names the name servers have no address for).
const SYSTEM_LOOKUPS: usize = 8;

/// A resolver asking `configured` (`dns.resolver`), or the system's name servers;
/// `attempts` tries of a query, each waiting [`QUERY_TIMEOUT`].
pub fn resolver(
    configured: Option<SocketAddr>,
    attempts: usize,
) -> Result<Resolver<TokioRuntimeProvider>, String> {
    let mut builder = match configured {
        None => Resolver::builder_tokio().map_err(|e| format!("the system resolver: {e}"))?,
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
    };
    let opts = builder.options_mut();
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = attempts;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // `/etc/hosts` as getaddrinfo reads it (`localhost` is answered by the resolver itself).
    opts.use_hosts_file = ResolveHosts::Always;
    builder.build().map_err(|e| format!("the resolver: {e}"))
}

/// What the resolver said of a name.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(Vec<IpAddr>),
    /// No such name, or none of its addresses (an answer).
    NoRecords,
    /// No answer in time, or a server failure.
    NoAnswer,
}

/// Look a name up (as written: `search` and `ndots` apply as resolv.conf sets them), within
/// [`LOOKUP_TIMEOUT`].
pub async fn lookup(r: &Resolver<TokioRuntimeProvider>, name: &str) -> Lookup {
    match tokio::time::timeout(LOOKUP_TIMEOUT, r.lookup_ip(name)).await {
        Ok(Ok(l)) => {
            let found: Vec<IpAddr> = l.iter().collect();
            if found.is_empty() {
                Lookup::NoRecords
            } else {
                Lookup::Found(found)
            }
        }
        Ok(Err(e)) if e.is_no_records_found() => Lookup::NoRecords,
        Ok(Err(_)) | Err(_) => Lookup::NoAnswer,
    }
}

/// The addresses of a DNS name (`Err` when it has none, or no answer came in time): asked of
/// `configured`, else of the system's name servers and hosts file — and, only when those
/// answer that it has none, of `getaddrinfo` ([`SYSTEM_LOOKUPS`] at a time), for the names
/// the system knows from elsewhere (NSS: mDNS, LDAP, `myhostname`). A name server that does
/// not answer is not waited for twice, and takes no thread.
pub async fn addresses(configured: Option<SocketAddr>, name: &str) -> Result<Vec<IpAddr>, ()> {
    match resolver(configured, 2) {
        Ok(r) => match lookup(&r, name).await {
            Lookup::Found(found) => return Ok(found),
            Lookup::NoAnswer => return Err(()),
            Lookup::NoRecords => {}
        },
        Err(e) => {
            static SAID: OnceLock<()> = OnceLock::new();
            if SAID.set(()).is_ok() {
                tracing::warn!(error = %e, "the system's resolver configuration could not be read: host names are looked up with getaddrinfo only");
            }
        }
    }
    if configured.is_some() {
        return Err(());
    }
    system_addresses(name).await
}

/// `getaddrinfo`, at most [`SYSTEM_LOOKUPS`] at a time (a permit held by the blocking
/// thread until libc returns, not by the caller who may have given up).
async fn system_addresses(name: &str) -> Result<Vec<IpAddr>, ()> {
    static PERMITS: OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = OnceLock::new();
    let permits =
        PERMITS.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(SYSTEM_LOOKUPS)));
    let name = name.to_string();
    let lookup = async {
        let permit = permits.clone().acquire_owned().await.map_err(|_| ())?;
        tokio::task::spawn_blocking(move || {
            let _held = permit;
            std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), 0))
                .map(|a| a.map(|s| s.ip()).collect::<Vec<_>>())
                .map_err(|_| ())
        })
        .await
        .map_err(|_| ())?
    };
    tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
        .await
        .map_err(|_| ())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::dns::DnsServer;

    /// What is asked of getaddrinfo next depends on this: only an answer that the name has
    /// no address is `NoRecords`; a silent or failing name server is `NoAnswer`.
    #[tokio::test]
    async fn only_an_answer_of_no_address_is_no_records() {
        let dns = DnsServer::start().await;
        dns.set_a(
            "known.acme.example",
            &[std::net::Ipv4Addr::new(93, 184, 215, 14)],
        );
        dns.silence("silent.acme.example");
        dns.fail("broken.acme.example");
        let r = resolver(Some(dns.addr), 1).unwrap();
        assert_eq!(
            lookup(&r, "known.acme.example").await,
            Lookup::Found(vec!["93.184.215.14".parse().unwrap()])
        );
        assert_eq!(lookup(&r, "unknown.acme.example").await, Lookup::NoRecords);
        assert_eq!(lookup(&r, "silent.acme.example").await, Lookup::NoAnswer);
        assert_eq!(lookup(&r, "broken.acme.example").await, Lookup::NoAnswer);
    }
}
