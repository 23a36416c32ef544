//! The outbound address policy's rules: spellings, ports, plaintext, names in other
//! scripts and names that resolve to private addresses.

use super::*;

fn strict() -> HostPolicy {
    HostPolicy {
        allowed_ports: Some(vec![465, 587, 2525]),
        allow_private_hosts: false,
        allow_plaintext: false,
        resolver: None,
    }
}

#[test]
fn legacy_ipv4_spellings_parse_to_the_address() {
    for s in [
        "127.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.0.1",
        "0x7f.1",
    ] {
        assert_eq!(
            HostName::parse(s),
            Some(HostName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))),
            "{s}"
        );
    }
}

#[test]
fn every_spelling_of_a_private_host_is_refused() {
    let p = strict();
    for h in [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f000001",
        "[::1]",
        "::1",
        "[::ffff:127.0.0.1]",
        "[127.0.0.1]",
        "[10.0.0.1]",
        "::ffff:7f00:1",
        "localhost",
        "LOCALHOST.",
        "foo.localhost",
        "metadata.google.internal",
        "Metadata.Google.Internal.",
        "printer.local",
        "router.home.arpa",
        "box.localdomain",
        "metadata",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "168.63.129.16",
        "100.64.0.1",
        "0.0.0.0",
        "[::]",
        "fe80::1",
        "fd00:ec2::254",
        "fc00::1",
        "224.0.0.1",
        "ff02::1",
        "198.18.0.1",
        "192.88.99.1",
        "[::ffff:192.88.99.1]",
        "240.0.0.1",
        "255.255.255.255",
        "64:ff9b::7f00:1",
        "2002:7f00:1::1",
        "[64:ff9b::a00:1]",
        // SIIT and Teredo, whatever they embed (a public address included).
        "[::ffff:0:7f00:1]",
        "[::ffff:0:808:808]",
        "[2001::1]",
        "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
        // The rest of 2001::/23 (benchmarking, ORCHID), and newer special ranges.
        "[2001:2::1]",
        "[2001:10::1]",
        "[2001:20::1]",
        "[2001:1ff::1]",
        "[3fff::1]",
        "[5f00::1]",
        "intranet",
        "a..b",
        "-x.com",
        "0",
        "1.2.3.4.5",
    ] {
        assert_eq!(
            p.check_static(h, 587, false).err(),
            Some(HostRefusal::HostNotAllowed),
            "{h}"
        );
    }
}

#[test]
fn public_hosts_pass_and_ports_and_plaintext_are_checked() {
    let p = strict();
    assert!(p.check_static("smtp.example.com", 587, false).is_ok());
    // Only whole labels: these are public names.
    for h in ["smtp.notlocal", "mail.xinternal", "local.example.com"] {
        assert!(p.check_static(h, 587, false).is_ok(), "{h}");
    }
    assert!(p.check_static("8.8.8.8", 465, false).is_ok());
    // Beside the 6to4 relay anycast 192.88.99/24: public.
    for h in ["192.88.98.255", "192.88.100.1"] {
        assert!(p.check_static(h, 465, false).is_ok(), "{h}");
    }
    // Just past the protocol-assignment block: public (Google's 2001:4860::/32).
    for h in [
        "[2606:4700::1111]",
        "[2001:200::1]",
        "[2001:4860:4860::8888]",
        // Beside 3fff::/20: public.
        "[3ffe:ffff::1]",
        "[3fff:1000::1]",
    ] {
        assert!(p.check_static(h, 465, false).is_ok(), "{h}");
    }
    assert_eq!(
        p.check_static("smtp.example.com", 25, false).err(),
        Some(HostRefusal::PortNotAllowed(Ports::of(&[465, 587, 2525])))
    );
    assert!(HostRefusal::PortNotAllowed(Ports::of(&[465, 587, 2525]))
        .advice()
        .contains("(465, 587 and 2525)"));
    assert!(HostRefusal::PortNotAllowed(Ports::of(&[2525]))
        .advice()
        .contains("(2525)"));
    assert_eq!(
        p.check_static("smtp.example.com", 587, true).err(),
        Some(HostRefusal::PlaintextNotAllowed)
    );
}

#[test]
fn a_name_in_another_script_goes_out_in_its_ascii_form() {
    assert_eq!(
        HostName::parse("SMTP.Bücher.Example"),
        Some(HostName::Dns("smtp.xn--bcher-kva.example".into()))
    );
    assert_eq!(
        strict().check_static("smtp.bücher.example", 587, false),
        Ok(HostName::Dns("smtp.xn--bcher-kva.example".into()))
    );
    // Full-width digits map to an address: still that address, still refused.
    assert_eq!(
        HostName::parse("１２７．０．０．１"),
        Some(HostName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)))
    );
    assert_eq!(
        strict().check_static("１２７．０．０．１", 587, false),
        Err(HostRefusal::HostNotAllowed)
    );
    // A name the mapping cannot take is still no host.
    assert_eq!(HostName::parse("a\u{200b}\u{fffd}b..example"), None);
    assert_eq!(HostName::parse("bü cher.example"), None);
}

/// A container's name may hold `_` (`mail_mock`): such a name is a private one, taken
/// where private hosts are allowed and refused where they are not.
#[test]
fn a_container_name_with_an_underscore_is_a_private_name() {
    let open = HostPolicy {
        allow_private_hosts: true,
        ..strict()
    };
    for h in ["mail_mock", "smtp_relay.internal"] {
        assert_eq!(
            HostName::parse(h),
            Some(HostName::Dns(h.to_string())),
            "{h}"
        );
        assert!(open.check_static(h, 587, false).is_ok(), "{h}");
        assert_eq!(
            strict().check_static(h, 587, false).err(),
            Some(HostRefusal::HostNotAllowed),
            "{h}"
        );
    }
    for h in ["-mail_mock", "mail_mock-", "mail mock", "a..b"] {
        assert_eq!(HostName::parse(h), None, "{h}");
    }
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused() {
    let p = HostPolicy {
        allowed_ports: Some(vec![587]),
        ..strict()
    };
    // "localhost" is refused statically; resolve() refuses any loopback answer too.
    let r = p.resolve(&HostName::Dns("localhost".into()), 587).await;
    assert!(matches!(
        r,
        Err(HostRefusal::HostNotAllowed) | Err(HostRefusal::Unresolvable)
    ));
}

/// A name server that never answers holds no thread of tokio's blocking pool (which every
/// database call shares): with one blocking thread, look-ups it should answer wait, and a
/// blocking task runs all the same. (Through getaddrinfo, the first look-up would take the
/// thread until libc gave up.)
#[test]
fn a_look_up_a_name_server_never_answers_takes_no_blocking_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dns = crate::testkit::dns::DnsServer::start().await;
        let p = HostPolicy {
            allow_private_hosts: true,
            resolver: Some(dns.addr),
            ..strict()
        };
        let names: Vec<String> = (0..4).map(|i| format!("host{i}.hang.example")).collect();
        for n in &names {
            dns.silence(n);
        }
        let hosts: Vec<HostName> = names.iter().map(|n| HostName::Dns(n.clone())).collect();
        let lookups = futures_util::future::join_all(hosts.iter().map(|h| p.resolve(h, 587)));
        tokio::pin!(lookups);
        // Each asked of the configured resolver, and waiting for its answer…
        let all_asked = async {
            while !names.iter().all(|n| dns.queries().contains(n)) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::select! {
            () = all_asked => {}
            _ = &mut lookups => panic!("the look-ups ended before they were all asked"),
        }
        // …a blocking task runs.
        tokio::select! {
            r = tokio::task::spawn_blocking(|| 42) => assert_eq!(r.unwrap(), 42),
            _ = &mut lookups => panic!("the look-ups ended before a blocking task could run"),
        }
    });
}

/// Names are looked up with `dns.resolver` when it is set: its A records are the addresses,
/// a name it does not know is unresolvable, and the address policy applies to the answers.
#[tokio::test]
async fn names_are_looked_up_with_the_configured_resolver() {
    let dns = crate::testkit::dns::DnsServer::start().await;
    dns.set_a("relay.acme.example", &[Ipv4Addr::new(93, 184, 215, 14)]);
    dns.set_a("inside.acme.example", &[Ipv4Addr::new(10, 0, 0, 7)]);
    let p = HostPolicy {
        resolver: Some(dns.addr),
        ..strict()
    };
    let name = |n: &str| HostName::Dns(n.into());
    assert_eq!(
        p.resolve(&name("relay.acme.example"), 587).await,
        Ok(vec!["93.184.215.14:587".parse().unwrap()])
    );
    assert_eq!(
        p.resolve(&name("nowhere.acme.example"), 587).await,
        Err(HostRefusal::Unresolvable)
    );
    assert_eq!(
        p.resolve(&name("inside.acme.example"), 587).await,
        Err(HostRefusal::HostNotAllowed)
    );
    // Both families are asked: a public A beside a loopback or a NAT64-embedded private AAAA
    // is refused; a public AAAA is kept.
    for (host, v6) in [
        ("dual.acme.example", "::1"),
        ("nat64.acme.example", "64:ff9b::a00:7"),
        (
            "public.acme.example",
            "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
        ),
    ] {
        dns.set_a(host, &[Ipv4Addr::new(93, 184, 215, 14)]);
        dns.set_aaaa(host, &[v6.parse().unwrap()]);
        let got = p.resolve(&name(host), 587).await;
        if host.starts_with("public") {
            let mut got = got.unwrap();
            got.sort();
            assert_eq!(got.len(), 2, "{got:?}");
        } else {
            assert_eq!(got, Err(HostRefusal::HostNotAllowed), "{host}");
        }
    }
}
