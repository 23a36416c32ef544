//! The outbound address policy (the SSRF guard, API.md §4) shared by every outbound
//! connection — tenant SMTP relays, webhook endpoints, HTTP transports: host syntax, allowed
//! ports, plaintext, and every resolved address checked against loopback/private/link-local/
//! CGNAT/reserved/metadata ranges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub mod resolver;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostRefusal {
    #[error("the SMTP host is not allowed")]
    HostNotAllowed,
    /// With the ports this server allows (`smtp.allowed_ports`).
    #[error("the SMTP port is not allowed")]
    PortNotAllowed(Ports),
    #[error("plaintext SMTP is not allowed")]
    PlaintextNotAllowed,
    #[error("the SMTP host does not resolve")]
    Unresolvable,
}

/// The allowed ports a refusal names: the first [`Ports::SHOWN`] of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    list: [u16; Ports::SHOWN],
    len: usize,
    more: bool,
}

impl Ports {
    pub const SHOWN: usize = 12;

    pub fn of(ports: &[u16]) -> Ports {
        let mut list = [0; Ports::SHOWN];
        let len = ports.len().min(Ports::SHOWN);
        list[..len].copy_from_slice(&ports[..len]);
        Ports {
            list,
            len,
            more: ports.len() > Ports::SHOWN,
        }
    }

    /// `465, 587 and 2525`.
    fn words(&self) -> String {
        let shown: Vec<String> = self.list[..self.len].iter().map(u16::to_string).collect();
        match (shown.split_last(), self.more) {
            (None, _) => "none".into(),
            (Some((last, [])), false) => last.clone(),
            (Some(_), true) => format!("{}, …", shown.join(", ")),
            (Some((last, rest)), false) => format!("{} and {last}", rest.join(", ")),
        }
    }
}

impl HostRefusal {
    /// What allows it, or what to check, in one sentence (API.md §18.8).
    pub fn advice(self) -> String {
        match self {
            HostRefusal::HostNotAllowed => "The SMTP host is a private, local or special address; an operator allows those with smtp.allow_private_hosts.".into(),
            HostRefusal::PortNotAllowed(ports) => format!("The SMTP port is not one this server allows ({}); an operator allows others with smtp.allowed_ports.", ports.words()),
            HostRefusal::PlaintextNotAllowed => "tls = \"none\" is not allowed on this server; an operator allows it with smtp.allow_plaintext.".into(),
            HostRefusal::Unresolvable => "The SMTP host does not resolve: check its name.".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// `None`: any port (webhook endpoints); SMTP hosts use `smtp.allowed_ports`.
    pub allowed_ports: Option<Vec<u16>>,
    pub allow_private_hosts: bool,
    pub allow_plaintext: bool,
    /// The resolver names are looked up with: `None` for the system's (every outbound host;
    /// `dns.resolver` is the domain check's).
    pub resolver: Option<SocketAddr>,
}

/// A host as written, normalised: an IP address (in any legacy spelling) or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    Ip(IpAddr),
    Dns(String),
}

impl HostName {
    /// Parse a host, or `None` if it is neither a DNS name nor an IP address.
    pub fn parse(host: &str) -> Option<HostName> {
        let h = host.trim_end_matches('.');
        if h.is_empty() || h.len() > 253 {
            return None;
        }
        // An address literal: IPv6 as URLs write it, or IPv4 as SMTP does (`[192.0.2.1]`).
        if let Some(inner) = h.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            return inner.parse::<IpAddr>().ok().map(HostName::Ip);
        }
        if let Ok(ip) = h.parse::<IpAddr>() {
            return Some(HostName::Ip(ip));
        }
        // inet_aton spellings resolvers accept: 127.1, 2130706433, 0x7f000001, 0177.0.0.1
        if let Some(v4) = parse_legacy_ipv4(h) {
            return Some(HostName::Ip(IpAddr::V4(v4)));
        }
        // A name in another script (`smtp.bücher.example`) goes out as its ASCII form
        // (UTS 46: mapped, lower-cased, Punycode), which DNS and TLS use; a mapping may turn
        // full-width digits into an address spelling, so the result is parsed again.
        if !h.is_ascii() {
            return idna::domain_to_ascii(h)
                .ok()
                .filter(|a| a.is_ascii() && !a.is_empty())
                .and_then(|a| HostName::parse(&a));
        }
        let lower = h.to_ascii_lowercase();
        let labels: Vec<&str> = lower.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                // `_`, as container names have it (the endpoint grammar takes it too).
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !labels.iter().all(label_ok) {
            return None;
        }
        // A numeric last label is an address spelling, never a DNS name.
        if labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()) || l.starts_with("0x"))
        {
            return None;
        }
        Some(HostName::Dns(lower))
    }

    /// The name TLS verifies: the DNS name, or the IP's text.
    pub fn tls_name(&self) -> String {
        match self {
            HostName::Ip(ip) => ip.to_string(),
            HostName::Dns(d) => d.clone(),
        }
    }
}

fn parse_legacy_ipv4(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        let v = if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            if hex.is_empty() {
                0
            } else {
                u64::from_str_radix(hex, 16).ok()?
            }
        } else if p.len() > 1 && p.starts_with('0') {
            u64::from_str_radix(&p[1..], 8).ok()?
        } else {
            if p.is_empty() {
                return None;
            }
            p.parse::<u64>().ok()?
        };
        nums.push(v);
    }
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - head.len() as u32);
    if *last >= (1u64 << rest_bits) {
        return None;
    }
    let mut v: u64 = 0;
    for (i, n) in head.iter().enumerate() {
        v |= n << (24 - 8 * i as u32);
    }
    v |= last;
    Some(Ipv4Addr::from(v as u32))
}

/// True when an address is a public unicast address an SMTP host may have.
pub fn ip_is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_public(v4),
        IpAddr::V6(v6) => v6_is_public(v6),
    }
}

fn v4_is_public(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    let in_net = |net: [u8; 4], bits: u32| {
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
    };
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || in_net([100, 64, 0, 0], 10)
        || in_net([192, 0, 0, 0], 24)
        || in_net([198, 18, 0, 0], 15)
        // The 6to4 relay anycast (deprecated by RFC 7526): whichever relay answers forwards
        // into IPv6, as 2002::/16 embeds an address; refused like it.
        || in_net([192, 88, 99, 0], 24)
        || in_net([240, 0, 0, 0], 4)
        // Azure's WireServer, a public address every Azure VM reaches as its platform's
        // metadata and certificate endpoint.
        || ip == Ipv4Addr::new(168, 63, 129, 16))
}

fn v6_is_public(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded_v4 =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_is_public(v4);
    }
    // IPv4-compatible ::a.b.c.d (deprecated) and NAT64 64:ff9b::/96
    if s[..6] == [0, 0, 0, 0, 0, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return !ip.is_unspecified() && !ip.is_loopback() && v4_is_public(embedded_v4(s[6], s[7]));
    }
    // SIIT ::ffff:0:a.b.c.d (::ffff:0:0/96), and the IETF protocol assignments 2001::/23:
    // Teredo 2001::/32 (it tunnels to an IPv4 server and client of its own), benchmarking
    // 2001:2::/48 (IPv4's 198.18/15), ORCHID: refused whatever they embed (API.md §17.8).
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] || (s[0] == 0x2001 && s[1] < 0x0200) {
        return false;
    }
    // 6to4 2002:aabb:ccdd::/48
    if s[0] == 0x2002 {
        return v4_is_public(embedded_v4(s[1], s[2]));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local
        || (s[0] & 0xfe00) == 0xfc00 // unique-local (incl. fd00:ec2::254)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x3fff && s[1] < 0x1000) // documentation 3fff::/20 (RFC 9637)
        || s[0] == 0x5f00 // SRv6 segment identifiers 5f00::/16 (RFC 9602)
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])) // discard-only 100::/64
}

impl HostPolicy {
    /// Checks that need no DNS: the host's form, the port, the TLS mode.
    pub fn check_static(
        &self,
        host: &str,
        port: u16,
        plaintext: bool,
    ) -> Result<HostName, HostRefusal> {
        let name = HostName::parse(host).ok_or(HostRefusal::HostNotAllowed)?;
        if let Some(ports) = self.allowed_ports.as_ref().filter(|p| !p.contains(&port)) {
            return Err(HostRefusal::PortNotAllowed(Ports::of(ports)));
        }
        if plaintext && !self.allow_plaintext {
            return Err(HostRefusal::PlaintextNotAllowed);
        }
        if !self.allow_private_hosts {
            match &name {
                HostName::Ip(ip) if !ip_is_public(*ip) => return Err(HostRefusal::HostNotAllowed),
                HostName::Dns(d) if is_private_name(d) => return Err(HostRefusal::HostNotAllowed),
                _ => {}
            }
        }
        Ok(name)
    }

    /// Resolve and check every address; the caller connects only to what this returns.
    pub async fn resolve(
        &self,
        name: &HostName,
        port: u16,
    ) -> Result<Vec<SocketAddr>, HostRefusal> {
        let addrs: Vec<SocketAddr> = match name {
            HostName::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            HostName::Dns(d) => resolver::addresses(self.resolver, d)
                .await
                .map_err(|()| HostRefusal::Unresolvable)?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
        };
        if addrs.is_empty() {
            return Err(HostRefusal::Unresolvable);
        }
        if !self.allow_private_hosts && addrs.iter().any(|a| !ip_is_public(a.ip())) {
            return Err(HostRefusal::HostNotAllowed);
        }
        Ok(addrs)
    }

    /// Static checks, then resolution.
    pub async fn check(
        &self,
        host: &str,
        port: u16,
        plaintext: bool,
    ) -> Result<(HostName, Vec<SocketAddr>), HostRefusal> {
        let name = self.check_static(host, port, plaintext)?;
        let addrs = self.resolve(&name, port).await?;
        Ok((name, addrs))
    }
}

/// Names that only ever mean a private or local host, refused before any look-up (a cloud's
/// metadata service answers at `metadata.google.internal`): single labels, `localhost`
/// (RFC 6761), `.local` (mDNS, RFC 6762), `.internal` (reserved for private use by ICANN),
/// `home.arpa` (RFC 8375) and the common `localdomain`. `name` is lower-case.
fn is_private_name(name: &str) -> bool {
    const SUFFIXES: [&str; 5] = ["localhost", "local", "internal", "home.arpa", "localdomain"];
    !name.contains('.')
        || SUFFIXES.iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
        })
}

#[cfg(test)]
mod tests;
