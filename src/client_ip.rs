//! The client's address, for the limits and the audit: the trusted-proxy aware client IP
//! (the per-IP limiter that uses it is HTTP wiring: routes/governor.rs).

use std::net::IpAddr;

pub use crate::config::parse_net;

/// Every `X-Forwarded-For` header line, in order, as one comma-separated list (a proxy may
/// append its own line instead of extending the client's; API.md §6.23).
pub fn forwarded_for(headers: &actix_web::http::header::HeaderMap) -> Option<String> {
    let mut out = String::new();
    for v in headers.get_all("x-forwarded-for") {
        // A line that is not text cannot be trusted to hold addresses: read it as a
        // malformed entry, which stops the walk at the proxy that sent it.
        let v = v.to_str().unwrap_or("?");
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(v);
    }
    (!out.is_empty()).then_some(out)
}

/// The configured trusted proxies.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn parse(list: &[String]) -> TrustedProxies {
        TrustedProxies(list.iter().filter_map(|s| parse_net(s)).collect())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client address: the peer, unless the peer is a trusted proxy; then the right-most
    /// `X-Forwarded-For` entry that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let Some(xff) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for entry in xff.rsplit(',') {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    let ip = canonical(ip);
                    client = ip;
                    if !self.contains(ip) {
                        return ip;
                    }
                }
                Err(_) => return client,
            }
        }
        client
    }
}

/// The address a client is limited as: an IPv6 client per /56, the smallest block a
/// subscriber usually gets (rotating addresses inside one's own prefix buys nothing); an
/// IPv4 client as itself.
pub fn limited_as(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 72))),
        v4 => v4,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_cannot_spoof_forwarded_for() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into()]);
        assert_eq!(
            t.client_ip(ip("203.0.113.9"), Some("1.2.3.4")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_proxy_chain_is_walked_from_the_right() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.0.2.1".into()]);
        assert_eq!(
            t.client_ip(ip("10.0.0.5"), Some("6.6.6.6, 198.51.100.7, 192.0.2.1")),
            ip("198.51.100.7")
        );
        assert_eq!(t.client_ip(ip("10.0.0.5"), None), ip("10.0.0.5"));
    }

    #[test]
    fn every_forwarded_for_line_counts_in_order() {
        use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
        let mut h = HeaderMap::new();
        let name = HeaderName::from_static("x-forwarded-for");
        h.append(name.clone(), HeaderValue::from_static("6.6.6.6"));
        h.append(name, HeaderValue::from_static("198.51.100.7, 10.0.0.9"));
        let xff = forwarded_for(&h).unwrap();
        assert_eq!(xff, "6.6.6.6, 198.51.100.7, 10.0.0.9");
        let t = TrustedProxies::parse(&["10.0.0.0/8".into()]);
        assert_eq!(t.client_ip(ip("10.0.0.5"), Some(&xff)), ip("198.51.100.7"));
    }

    #[test]
    fn parse_net_forms() {
        assert!(parse_net("10.0.0.0/8").is_some());
        assert!(parse_net("::1").is_some());
        assert!(parse_net("10.0.0.0/33").is_none());
        assert!(parse_net("nope").is_none());
    }
}
