use super::*;
use proptest::prelude::*;

fn zones(z: &[&str]) -> Vec<String> {
    z.iter().map(|s| (*s).to_owned()).collect()
}

fn c(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn two() -> TestHostsPlan {
    TestHostsPlan::new(
        "0a1b",
        2,
        &zones(&["a", "b"]),
        c("10.214.7.0/24"),
        vec![c("10.215.56.0/24"), c("10.215.57.0/24")],
    )
    .unwrap()
}

/// Names, addresses, gateway and zones of a two-host layout are the documented ones.
#[test]
fn layout() {
    let p = two();
    assert_eq!(p.bridge, "bh0a1b");
    assert_eq!(p.gateway, c("10.214.7.1/24"));
    assert_eq!(p.link_subnet(), c("10.214.7.0/24"));
    let h = &p.hosts[1];
    assert_eq!(h.index, 1);
    assert_eq!(h.netns, "berth-0a1b-host1");
    assert_eq!(
        h.netns_path,
        PathBuf::from("/var/run/netns/berth-0a1b-host1")
    );
    assert_eq!(h.root_veth, "bh0a1bh1");
    assert_eq!(h.ifname, "eth0");
    assert_eq!(h.address, c("10.214.7.11/24"));
    assert_eq!(h.gateway, "10.214.7.1".parse::<Ipv4Addr>().unwrap());
    assert_eq!(h.task_subnet, c("10.215.57.0/24"));
    assert_eq!(h.zone, "b");
    assert_eq!(p.hosts[0].address, c("10.214.7.10/24"));
    assert_eq!(
        p.subnets(),
        [c("10.214.7.0/24"), c("10.215.56.0/24"), c("10.215.57.0/24")]
    );
}

/// Zones are handed out round-robin.
#[test]
fn zones_round_robin() {
    let p = TestHostsPlan::in_slot("ab", 5, &zones(&["a", "b"]), 3).unwrap();
    let z: Vec<&str> = p.hosts.iter().map(|h| h.zone.as_str()).collect();
    assert_eq!(z, ["a", "b", "a", "b", "a"]);
}

/// The three scripts: root objects first, then each host's own side with routes to the
/// other hosts only (no default), then the root's routes to each host's tasks.
#[test]
fn scripts() {
    let p = two();
    assert_eq!(
        p.root_plan().script(),
        format!(
            "netns add berth-0a1b-host0\n\
         netns add berth-0a1b-host1\n\
         link add name bh0a1b address {} type bridge\n\
         addr replace 10.214.7.1/24 dev bh0a1b\n\
         link set bh0a1b up\n\
         link add name bh0a1bh0 type veth peer name eth0 netns berth-0a1b-host0\n\
         link set dev bh0a1bh0 master bh0a1b up\n\
         link add name bh0a1bh1 type veth peer name eth0 netns berth-0a1b-host1\n\
         link set dev bh0a1bh1 master bh0a1b up\n",
            crate::bridge::bridge_mac("bh0a1b")
        )
    );
    assert_eq!(p.root_plan().netns, None);
    let h0 = p.host_plan(0);
    assert_eq!(h0.netns.as_deref(), Some("berth-0a1b-host0"));
    assert_eq!(
        h0.script(),
        "link set dev lo up\n\
         addr add 10.214.7.10/24 dev eth0\n\
         link set dev eth0 up\n\
         route add 10.215.57.0/24 via 10.214.7.11 dev eth0\n"
    );
    assert!(!h0.script().contains("default"));
    assert_eq!(
        p.routes_plan().script(),
        "route add 10.215.56.0/24 via 10.214.7.10 dev bh0a1b\n\
         route add 10.215.57.0/24 via 10.214.7.11 dev bh0a1b\n"
    );
}

/// Every name fits IFNAMSIZ / the namespace limit at the longest key and highest index.
#[test]
fn longest_names_are_valid() {
    let key = "f".repeat(MAX_KEY_LEN);
    let p = TestHostsPlan::in_slot(&key, MAX_HOSTS, &zones(&["a"]), SLOTS - 1).unwrap();
    crate::names::validate_ifname(&p.bridge).unwrap();
    for h in &p.hosts {
        crate::names::validate_ifname(&h.root_veth).unwrap();
        crate::names::validate_netns_name(&h.netns).unwrap();
    }
    assert_eq!(p.hosts[7].task_subnet, c("10.215.255.0/24"));
}

/// Bad input is refused with its own error before anything runs.
#[test]
fn validation() {
    let z = zones(&["a"]);
    let link = c("10.214.7.0/24");
    let one = || vec![c("10.215.56.0/24")];
    let new =
        |key: &str, n, zs: &[String], link, tasks| TestHostsPlan::new(key, n, zs, link, tasks);
    for key in ["", "ABC", "0a1bz", "0a-b", &"a".repeat(12), "h1"] {
        assert_eq!(
            new(key, 1, &z, link, one()),
            Err(PlanError::BadKey { key: key.into() })
        );
    }
    assert_eq!(
        new("ab", 0, &z, link, vec![]),
        Err(PlanError::BadCount { count: 0 })
    );
    assert_eq!(
        new("ab", 9, &z, link, vec![]),
        Err(PlanError::BadCount { count: 9 })
    );
    assert_eq!(new("ab", 1, &[], link, one()), Err(PlanError::NoZones));
    assert_eq!(
        new("ab", 1, &zones(&["a b"]), link, one()),
        Err(PlanError::BadZone { zone: "a b".into() })
    );
    assert_eq!(
        new("ab", 1, &z, c("10.214.7.0/29"), one()),
        Err(PlanError::LinkSubnetTooSmall {
            subnet: c("10.214.7.0/29"),
            count: 1
        })
    );
    assert_eq!(
        new("ab", 2, &z, link, one()),
        Err(PlanError::TaskSubnetCount {
            expected: 2,
            got: 1
        })
    );
    assert_eq!(
        new("ab", 1, &z, link, vec![c("10.215.56.4/31")]),
        Err(PlanError::TaskSubnetTooSmall {
            subnet: c("10.215.56.4/31")
        })
    );
    assert_eq!(
        new("ab", 1, &z, link, vec![c("8.8.8.0/24")]),
        Err(PlanError::NotPrivate {
            subnet: c("8.8.8.0/24")
        })
    );
    assert_eq!(
        new("ab", 1, &z, c("10.0.0.0/7"), one()),
        Err(PlanError::NotPrivate {
            subnet: c("10.0.0.0/7")
        })
    );
    assert_eq!(
        new(
            "ab",
            2,
            &z,
            link,
            vec![c("10.215.56.0/24"), c("10.215.56.128/25")]
        ),
        Err(PlanError::Overlap {
            a: c("10.215.56.0/24"),
            b: c("10.215.56.128/25")
        })
    );
    assert_eq!(
        new("ab", 1, &z, link, vec![c("10.214.0.0/16")]),
        Err(PlanError::Overlap {
            a: link,
            b: c("10.214.0.0/16")
        })
    );
    // A link /28 holds .1 and .10-.14: five hosts fit, six do not.
    assert!(
        TestHostsPlan::new("ab", 5, &z, c("10.214.7.0/28"), default_task_subnets(0, 5)).is_ok()
    );
    assert!(
        TestHostsPlan::new("ab", 6, &z, c("10.214.7.0/28"), default_task_subnets(0, 6)).is_err()
    );
}

/// A key owns exactly its bridge, its `h<digits>` veths and its `host<digits>`
/// namespaces — never a longer key's names, nor another prefix's.
#[test]
fn ownership_is_exact() {
    assert!(owns_link("ab", "bhab"));
    assert!(owns_link("ab", "bhabh0") && owns_link("ab", "bhabh7"));
    for other in [
        "bhabc", "bhabch0", "bhabh", "bhabhx", "bha", "bvab", "bhab0",
    ] {
        assert!(!owns_link("ab", other), "{other}");
    }
    assert!(owns_netns("ab", "berth-ab-host0"));
    for other in [
        "berth-ab-host",
        "berth-abc-host0",
        "berth-ab-hostx",
        "berth-ab-p123",
    ] {
        assert!(!owns_netns("ab", other), "{other}");
    }
}

/// Slots are stable, in range, and their default subnets lie in the documented ranges.
#[test]
fn slots_and_default_subnets() {
    assert_eq!(slot_for_key("0a1b"), slot_for_key("0a1b"));
    let slot = 5;
    assert_eq!(default_link_subnet(slot), c("10.214.5.0/24"));
    assert_eq!(
        default_task_subnets(slot, 3),
        [
            c("10.215.40.0/24"),
            c("10.215.41.0/24"),
            c("10.215.42.0/24")
        ]
    );
    assert!(LINK_RANGE.contains(default_link_subnet(31).network()));
    assert!(TASK_RANGE.contains(default_task_subnets(31, 8)[7].broadcast()));
}

/// free_slot skips slots whose subnets are routed, ignores a default route, wraps around
/// and gives up when every slot is taken.
#[test]
fn free_slot_skips_routed() {
    let key = "0a1b";
    let own = slot_for_key(key);
    assert_eq!(free_slot(key, 2, &[]), Some(own));
    assert_eq!(free_slot(key, 2, &[c("0.0.0.0/0")]), Some(own));
    let taken = [default_link_subnet(own)];
    assert_eq!(free_slot(key, 2, &taken), Some((own + 1) % SLOTS));
    let taken = [default_task_subnets(own, 2)[1]];
    assert_eq!(free_slot(key, 2, &taken), Some((own + 1) % SLOTS));
    assert_eq!(free_slot(key, 2, &[c("10.215.0.0/16")]), None);
}

/// `ip netns pids` output is one pid a line.
#[test]
fn pids() {
    assert_eq!(parse_pids("123\n4567\n"), [123, 4567]);
    assert!(parse_pids("").is_empty());
}

/// A host's command runs the program under nsenter in its namespace.
#[test]
fn host_command() {
    let cmd = two().hosts[0].command("berth");
    assert_eq!(cmd.get_program(), NSENTER_BIN);
    let args: Vec<_> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        args,
        ["--net=/var/run/netns/berth-0a1b-host0", "--", "berth"]
    );
}

/// The layout round-trips through JSON (a server can persist it).
#[test]
fn serde_round_trip() {
    let p = two();
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<TestHostsPlan>(&json).unwrap(), p);
}

proptest! {
    /// Any valid key and count gives valid, distinct names and non-overlapping subnets.
    #[test]
    fn plans_are_consistent(key in "[0-9a-f]{1,11}", count in 1usize..=MAX_HOSTS, slot in 0u8..SLOTS) {
        let p = TestHostsPlan::in_slot(&key, count, &zones(&["a", "b", "c"]), slot).unwrap();
        let mut names: Vec<&str> = vec![&p.bridge];
        names.extend(p.hosts.iter().map(|h| h.root_veth.as_str()));
        for n in &names {
            prop_assert!(crate::names::validate_ifname(n).is_ok());
            prop_assert!(owns_link(&key, n));
        }
        let distinct: std::collections::BTreeSet<_> = names.iter().collect();
        prop_assert_eq!(distinct.len(), names.len());
        for h in &p.hosts {
            prop_assert!(owns_netns(&key, &h.netns));
            prop_assert!(p.link_subnet().contains(h.address.addr()));
        }
        let subnets = p.subnets();
        for (i, a) in subnets.iter().enumerate() {
            for b in &subnets[i + 1..] {
                prop_assert!(!a.overlaps(b));
            }
        }
    }
}
