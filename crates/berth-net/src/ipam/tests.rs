use super::*;
use proptest::prelude::*;

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Parsing accepts canonical forms and Display gives them back unchanged.
#[test]
fn cidr_parse_display_round_trip() {
    for s in [
        "10.213.7.0/24",
        "10.213.7.1/24",
        "0.0.0.0/0",
        "255.255.255.255/32",
        "192.168.0.0/16",
    ] {
        assert_eq!(cidr(s).to_string(), s);
    }
}

/// Every malformed input is rejected with the error naming what is wrong.
#[test]
fn cidr_parse_rejects_malformed() {
    let missing = |s: &str| CidrError::MissingPrefix(s.to_owned());
    let addr = |s: &str| CidrError::BadAddress(s.to_owned());
    let prefix = |s: &str| CidrError::BadPrefix(s.to_owned());
    let cases = [
        ("10.0.0.0", missing("10.0.0.0")),
        ("", missing("")),
        ("10.0.0/24", addr("10.0.0/24")),
        ("10.0.0.256/24", addr("10.0.0.256/24")),
        ("010.0.0.0/24", addr("010.0.0.0/24")),
        (" 10.0.0.0/24", addr(" 10.0.0.0/24")),
        ("::1/64", addr("::1/64")),
        ("10.0.0.0/", prefix("10.0.0.0/")),
        ("10.0.0.0/33", prefix("10.0.0.0/33")),
        ("10.0.0.0/024", prefix("10.0.0.0/024")),
        ("10.0.0.0/08", prefix("10.0.0.0/08")),
        ("10.0.0.0/+8", prefix("10.0.0.0/+8")),
        ("10.0.0.0/-1", prefix("10.0.0.0/-1")),
        ("10.0.0.0/24 ", prefix("10.0.0.0/24 ")),
        ("10.0.0.0/2/4", prefix("10.0.0.0/2/4")),
    ];
    for (input, want) in cases {
        assert_eq!(input.parse::<Cidr>(), Err(want), "{input:?}");
    }
}

/// Network, broadcast, netmask, size and host count for typical and edge prefixes.
#[test]
fn cidr_arithmetic() {
    let c = cidr("10.213.7.77/24");
    assert_eq!(c.network(), ip("10.213.7.0"));
    assert_eq!(c.broadcast(), ip("10.213.7.255"));
    assert_eq!(c.netmask(), ip("255.255.255.0"));
    assert_eq!(c.block(), cidr("10.213.7.0/24"));
    assert_eq!(c.size(), 256);
    assert_eq!(c.host_count(), 254);

    let all = cidr("1.2.3.4/0");
    assert_eq!(all.network(), ip("0.0.0.0"));
    assert_eq!(all.broadcast(), ip("255.255.255.255"));
    assert_eq!(all.netmask(), ip("0.0.0.0"));
    assert_eq!(all.size(), 1 << 32);
    assert_eq!(all.host_count(), u32::MAX - 1);
    assert!(all.contains(ip("8.8.8.8")));

    let one = cidr("1.2.3.4/32");
    assert_eq!(
        (one.network(), one.broadcast()),
        (ip("1.2.3.4"), ip("1.2.3.4"))
    );
    assert_eq!(one.host_count(), 0);
    assert_eq!(one.nth_host(1), None);
    assert_eq!(cidr("1.2.3.4/31").host_count(), 0);
    assert_eq!(cidr("1.2.3.4/30").host_count(), 2);
}

/// `contains` is true exactly inside the block, at both ends included.
#[test]
fn cidr_contains() {
    let c = cidr("10.213.8.0/22");
    assert!(c.contains(ip("10.213.8.0")));
    assert!(c.contains(ip("10.213.11.255")));
    assert!(!c.contains(ip("10.213.12.0")));
    assert!(!c.contains(ip("10.213.7.255")));
}

/// Blocks overlap when one holds the other, whichever is written first; neighbours do not.
#[test]
fn cidr_overlaps() {
    let big = cidr("10.215.0.0/16");
    assert!(big.overlaps(&cidr("10.215.9.0/24")));
    assert!(cidr("10.215.9.7/24").overlaps(&big));
    assert!(cidr("10.215.9.0/24").overlaps(&cidr("10.215.9.128/25")));
    assert!(!cidr("10.215.9.0/24").overlaps(&cidr("10.215.10.0/24")));
    assert!(!cidr("10.214.0.0/16").overlaps(&big));
}

/// `nth_host` counts from the network address, stops before broadcast.
#[test]
fn cidr_nth_host() {
    let c = cidr("10.213.7.0/24");
    assert_eq!(c.nth_host(0), None);
    assert_eq!(c.nth_host(1), Some(ip("10.213.7.1")));
    assert_eq!(c.nth_host(254), Some(ip("10.213.7.254")));
    assert_eq!(c.nth_host(255), None);
    assert_eq!(c.with_addr(ip("10.213.7.9")), Some(cidr("10.213.7.9/24")));
    assert_eq!(c.with_addr(ip("10.213.6.9")), None);
}

/// Serde uses the string form both ways and rejects bad strings.
#[test]
fn cidr_serde() {
    let c = cidr("10.213.7.1/24");
    assert_eq!(serde_json::to_string(&c).unwrap(), "\"10.213.7.1/24\"");
    assert_eq!(
        serde_json::from_str::<Cidr>("\"10.213.7.1/24\"").unwrap(),
        c
    );
    assert!(serde_json::from_str::<Cidr>("\"10.213.7.1\"").is_err());
}

/// Allocation starts after the gateway and goes up one by one; the gateway is .1.
#[test]
fn allocate_lowest_first() {
    let mut ipam = Ipam::new(cidr("10.213.7.0/24")).unwrap();
    assert_eq!(ipam.gateway(), cidr("10.213.7.1/24"));
    assert_eq!(ipam.capacity(), 253);
    assert_eq!(ipam.allocate().unwrap(), cidr("10.213.7.2/24"));
    assert_eq!(ipam.allocate().unwrap(), cidr("10.213.7.3/24"));
    assert_eq!(ipam.allocate().unwrap(), cidr("10.213.7.4/24"));
    assert!(ipam.release(ip("10.213.7.3")));
    assert_eq!(ipam.allocate().unwrap(), cidr("10.213.7.3/24"));
    assert_eq!(ipam.allocate().unwrap(), cidr("10.213.7.5/24"));
    assert_eq!(ipam.available(), 253 - 4);
}

/// A subnet given by any address inside it is normalised to its network address.
#[test]
fn new_normalises() {
    let ipam = Ipam::new(cidr("10.213.7.77/24")).unwrap();
    assert_eq!(ipam.subnet(), cidr("10.213.7.0/24"));
}

/// /31 and /32 are refused; /30 holds exactly one task.
#[test]
fn tiny_subnets() {
    for s in ["10.0.0.0/31", "10.0.0.0/32"] {
        assert_eq!(
            Ipam::new(cidr(s)),
            Err(IpamError::SubnetTooSmall { subnet: cidr(s) })
        );
    }
    let mut ipam = Ipam::new(cidr("10.0.0.4/30")).unwrap();
    assert_eq!(ipam.gateway(), cidr("10.0.0.5/30"));
    assert_eq!(ipam.allocate().unwrap(), cidr("10.0.0.6/30"));
    assert_eq!(
        ipam.allocate(),
        Err(IpamError::SubnetFull {
            subnet: cidr("10.0.0.4/30"),
            capacity: 1
        })
    );
}

/// A full subnet says so, and a release makes room again.
#[test]
fn full_then_release() {
    let mut ipam = Ipam::new(cidr("10.213.7.0/28")).unwrap();
    let got: Vec<_> = (0..13).map(|_| ipam.allocate().unwrap().addr()).collect();
    assert_eq!(got.first(), Some(&ip("10.213.7.2")));
    assert_eq!(got.last(), Some(&ip("10.213.7.14")));
    let err = ipam.allocate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "subnet 10.213.7.0/28 is full: all 13 task addresses are allocated"
    );
    assert!(ipam.release(ip("10.213.7.9")));
    assert_eq!(ipam.allocate().unwrap().addr(), ip("10.213.7.9"));
}

/// Reserve refuses the gateway, network, broadcast, outsiders and duplicates.
#[test]
fn reserve_checks() {
    let subnet = cidr("10.213.7.0/24");
    let mut ipam = Ipam::new(subnet).unwrap();
    let not_task = |s: &str, role| IpamError::NotATaskAddress {
        ip: ip(s),
        subnet,
        role,
    };
    assert_eq!(
        ipam.reserve(ip("10.213.7.0")),
        Err(not_task("10.213.7.0", "network address"))
    );
    assert_eq!(
        ipam.reserve(ip("10.213.7.1")),
        Err(not_task("10.213.7.1", "gateway"))
    );
    assert_eq!(
        ipam.reserve(ip("10.213.7.255")),
        Err(not_task("10.213.7.255", "broadcast address"))
    );
    assert_eq!(
        ipam.reserve(ip("10.213.8.2")),
        Err(IpamError::OutsideSubnet {
            ip: ip("10.213.8.2"),
            subnet
        })
    );
    assert_eq!(ipam.reserve(ip("10.213.7.3")), Ok(cidr("10.213.7.3/24")));
    assert_eq!(
        ipam.reserve(ip("10.213.7.3")),
        Err(IpamError::AlreadyAllocated {
            ip: ip("10.213.7.3")
        })
    );
    // Allocation skips the reserved address and fills the gap below it first.
    assert_eq!(ipam.allocate().unwrap().addr(), ip("10.213.7.2"));
    assert_eq!(ipam.allocate().unwrap().addr(), ip("10.213.7.4"));
}

/// Release is idempotent and never fails, whatever the address.
#[test]
fn release_idempotent() {
    let mut ipam = Ipam::new(cidr("10.213.7.0/24")).unwrap();
    let a = ipam.allocate().unwrap().addr();
    assert!(ipam.release(a));
    assert!(!ipam.release(a));
    assert!(!ipam.release(ip("10.213.7.1")));
    assert!(!ipam.release(ip("1.1.1.1")));
}

/// State round-trips through JSON in the documented shape.
#[test]
fn serde_round_trip() {
    let mut ipam = Ipam::new(cidr("10.213.7.0/24")).unwrap();
    ipam.allocate().unwrap();
    ipam.reserve(ip("10.213.7.40")).unwrap();
    let json = serde_json::to_string(&ipam).unwrap();
    assert_eq!(
        json,
        r#"{"subnet":"10.213.7.0/24","allocated":["10.213.7.2","10.213.7.40"]}"#
    );
    let back: Ipam = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ipam);
}

/// Loading state re-checks every address: the gateway, duplicates, outsiders, unknown
/// fields and too-small subnets are refused.
#[test]
fn serde_load_validates() {
    for bad in [
        r#"{"subnet":"10.213.7.0/24","allocated":["10.213.7.1"]}"#,
        r#"{"subnet":"10.213.7.0/24","allocated":["10.213.7.2","10.213.7.2"]}"#,
        r#"{"subnet":"10.213.7.0/24","allocated":["10.213.8.2"]}"#,
        r#"{"subnet":"10.213.7.0/24","allocated":[],"extra":1}"#,
        r#"{"subnet":"10.213.7.0/31","allocated":[]}"#,
        r#"{"subnet":"10.213.7.0","allocated":[]}"#,
    ] {
        assert!(serde_json::from_str::<Ipam>(bad).is_err(), "{bad}");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Allocate,
    Release(u32),
    Reserve(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Allocate),
        1 => (0u32..40).prop_map(Op::Release),
        1 => (0u32..40).prop_map(Op::Reserve),
    ]
}

proptest! {
    /// Parsing never panics, and whatever parses prints back to the same string.
    #[test]
    fn cidr_parse_never_panics(s in "\\PC{0,24}") {
        if let Ok(c) = s.parse::<Cidr>() {
            prop_assert_eq!(c.to_string(), s);
        }
    }

    /// Display then parse is the identity for every address and prefix.
    #[test]
    fn cidr_display_parse(addr in any::<u32>(), prefix in 0u8..=32) {
        let c = Cidr::new(Ipv4Addr::from(addr), prefix).unwrap();
        prop_assert_eq!(c.to_string().parse::<Cidr>(), Ok(c));
        prop_assert!(c.contains(c.addr()));
        prop_assert!(c.contains(c.network()) && c.contains(c.broadcast()));
        prop_assert!(c.overlaps(&c.block()));
    }

    /// Under any sequence of operations no address is handed out twice, the gateway,
    /// network and broadcast never are, every address is inside the subnet, each
    /// allocation is the lowest free one, and the state survives a serde round trip.
    #[test]
    fn ipam_invariants(prefix in 26u8..=30, third in 0u8..=255, ops in proptest::collection::vec(op(), 0..200)) {
        let subnet = Cidr::new(Ipv4Addr::new(10, 213, third, 0), prefix).unwrap();
        let mut ipam = Ipam::new(subnet).unwrap();
        let mut model = BTreeSet::new();
        let base = u32::from(subnet.network());
        for op in ops {
            match op {
                Op::Allocate => match ipam.allocate() {
                    Ok(got) => {
                        let a = got.addr();
                        prop_assert_eq!(got.prefix(), prefix);
                        prop_assert!(subnet.contains(a));
                        prop_assert!(a != subnet.network() && a != subnet.broadcast() && a != ipam.gateway().addr());
                        let lowest = (base + 2..u32::from(subnet.broadcast()))
                            .map(Ipv4Addr::from)
                            .find(|c| !model.contains(c));
                        prop_assert_eq!(Some(a), lowest);
                        prop_assert!(model.insert(a), "handed out twice: {}", a);
                    }
                    Err(IpamError::SubnetFull { .. }) => {
                        prop_assert_eq!(model.len() as u32, ipam.capacity());
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
                Op::Release(n) => {
                    let a = Ipv4Addr::from(base + n);
                    prop_assert_eq!(ipam.release(a), model.remove(&a));
                }
                Op::Reserve(n) => {
                    let a = Ipv4Addr::from(base + n);
                    let valid = subnet.contains(a) && n >= 2 && a != subnet.broadcast();
                    match ipam.reserve(a) {
                        Ok(_) => prop_assert!(valid && model.insert(a)),
                        Err(IpamError::AlreadyAllocated { .. }) => prop_assert!(model.contains(&a)),
                        Err(_) => prop_assert!(!valid),
                    }
                }
            }
            prop_assert_eq!(ipam.allocated().collect::<BTreeSet<_>>(), model.clone());
            prop_assert_eq!(ipam.available() as usize, ipam.capacity() as usize - model.len());
        }
        let back: Ipam = serde_json::from_str(&serde_json::to_string(&ipam).unwrap()).unwrap();
        prop_assert_eq!(back, ipam);
    }
}
