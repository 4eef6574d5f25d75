//! Test hosts on the real kernel (run as root): two hosts with a dummy task each; tasks
//! reach each other across hosts, the root namespace reaches both, nothing leaves the
//! machine, and destroy removes everything with the key and nothing else.
//!
//! Every test uses its own random key (8 hex digits), so its names and default slot are
//! its own; guards remove what it made, by name, even when it panics.

mod common;

use std::process::{Command, Stdio};
use std::sync::Mutex;

use berth_net::ip::IP_BIN;
use berth_net::routes::find_default_route;
use berth_net::testhosts::{
    create, destroy, leftovers, CreateError, TestHost, TestHosts, TestHostsPlan,
};
use berth_net::Cidr;
use common::{hex8, ip_ok, ip_out, NetnsGuard, Proc};

const BUSYBOX: &str = "/usr/bin/busybox";

/// Slots are chosen from the routing table, so creates in this process go one at a time
/// (another process racing for the same slot is caught by create's own check).
static CREATE: Mutex<()> = Mutex::new(());

/// Test hosts destroyed on drop.
struct HostsGuard {
    hosts: TestHosts,
}

impl HostsGuard {
    fn new(count: usize) -> Self {
        let _one = CREATE.lock().unwrap_or_else(|p| p.into_inner());
        let zones = vec!["a".to_owned(), "b".to_owned()];
        let plan = TestHostsPlan::with_free_subnets(&hex8(), count, &zones).unwrap();
        let hosts = create(&plan).unwrap();
        Self { hosts }
    }

    fn key(&self) -> &str {
        &self.hosts.plan.key
    }
}

impl Drop for HostsGuard {
    fn drop(&mut self) {
        if let Err(e) = destroy(self.key()) {
            eprintln!("cleanup: {e:?}");
        }
    }
}

/// A dummy task inside a test host, as an agent would make it: a bridge in the host's
/// namespace holding the task subnet's `.1`, a task namespace with a veth on it, address
/// `.2` and its default route via the bridge. The task namespace is removed on drop (its
/// veth and the bridge go with the host namespace).
struct Task {
    ns: NetnsGuard,
    ip: String,
}

fn task_on(host: &TestHost) -> Task {
    let id = hex8();
    let ns = NetnsGuard::new(format!("bn-{id}"));
    let (br, veth) = (format!("tb{id}"), format!("tv{id}"));
    let subnet = host.task_subnet;
    let gw = subnet.nth_host(1).unwrap();
    let ip = subnet.nth_host(2).unwrap();
    let hn = host.netns.as_str();
    ip_ok(&["-n", hn, "link", "add", "name", &br, "type", "bridge"]);
    ip_ok(&[
        "-n",
        hn,
        "addr",
        "add",
        &format!("{gw}/{}", subnet.prefix()),
        "dev",
        &br,
    ]);
    ip_ok(&["-n", hn, "link", "set", "dev", &br, "up"]);
    ip_ok(&[
        "-n", hn, "link", "add", "name", &veth, "type", "veth", "peer", "name", "eth0", "netns",
        &ns.0,
    ]);
    ip_ok(&["-n", hn, "link", "set", "dev", &veth, "master", &br, "up"]);
    let addr = format!("{ip}/{}", subnet.prefix());
    ip_ok(&["-n", &ns.0, "addr", "add", &addr, "dev", "eth0"]);
    ip_ok(&["-n", &ns.0, "link", "set", "dev", "eth0", "up"]);
    ip_ok(&[
        "-n",
        &ns.0,
        "route",
        "add",
        "default",
        "via",
        &gw.to_string(),
    ]);
    Task {
        ns,
        ip: ip.to_string(),
    }
}

/// `busybox ping -c1 -W2 DST`, in `netns` or (None) in the caller's namespace.
fn ping(netns: Option<&str>, dst: &str) -> bool {
    let mut cmd = Command::new(IP_BIN);
    if let Some(ns) = netns {
        cmd.args(["netns", "exec", ns]);
    } else {
        cmd = Command::new(BUSYBOX);
    }
    if netns.is_some() {
        cmd.arg(BUSYBOX);
    }
    cmd.args(["ping", "-c1", "-W2", dst])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Two hosts: a task on host 0 reaches a task on host 1 and back, the root namespace
/// reaches both tasks and both hosts reach the gateway; no host has a default route or can
/// route off the machine; destroy kills what runs in a host, removes every namespace,
/// link and route with the key, and can be called again.
#[test]
fn tasks_on_two_hosts_reach_each_other() {
    let root_default = ip_out(&["route", "show", "default"]);
    let g = HostsGuard::new(2);
    let key = g.key().to_owned();
    let hosts = g.hosts.hosts();
    assert_eq!(hosts.len(), 2);
    assert_eq!((hosts[0].zone.as_str(), hosts[1].zone.as_str()), ("a", "b"));
    assert!(hosts.iter().all(|h| h.netns_path.exists()));
    let t0 = task_on(&hosts[0]);
    let t1 = task_on(&hosts[1]);

    assert!(
        ping(Some(&t0.ns.0), &t1.ip),
        "task on host 0 → task on host 1"
    );
    assert!(
        ping(Some(&t1.ns.0), &t0.ip),
        "task on host 1 → task on host 0"
    );
    assert!(ping(None, &t0.ip) && ping(None, &t1.ip), "root → tasks");
    let gw = g.hosts.gateway().to_string();
    for h in hosts {
        assert!(ping(Some(&h.netns), &gw), "{} → gateway", h.netns);
        let routes = ip_out(&["-n", &h.netns, "-4", "-o", "route", "show", "table", "all"]);
        assert_eq!(find_default_route(&routes), None, "{routes}");
        // The kernel has no way off the machine from a host: a route lookup (nothing is
        // sent) for an outside address (TEST-NET-2) fails.
        let out = Command::new(IP_BIN)
            .args(["-n", &h.netns, "route", "get", "198.51.100.1"])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let fwd = Command::new(IP_BIN)
            .args([
                "netns",
                "exec",
                &h.netns,
                "cat",
                "/proc/sys/net/ipv4/ip_forward",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");
    }
    let br_fwd = std::fs::read_to_string(format!(
        "/proc/sys/net/ipv4/conf/{}/forwarding",
        g.hosts.plan.bridge
    ))
    .unwrap();
    assert_eq!(br_fwd.trim(), "0");
    assert_eq!(ip_out(&["route", "show", "default"]), root_default);
    let found = leftovers(&key).unwrap();
    assert_eq!(found.netns.len(), 2);
    assert_eq!(found.links.len(), 3, "bridge and two veths: {found:?}");
    assert!(
        found.routes.len() >= 3,
        "connected + two task subnets: {found:?}"
    );

    // A process left in a host is killed by destroy.
    let child = hosts[0]
        .command("/usr/bin/sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let mut sleeper = Proc(child);
    std::thread::sleep(std::time::Duration::from_millis(100));
    destroy(&key).unwrap();
    let status = sleeper.0.wait().unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    assert!(leftovers(&key).unwrap().is_empty(), "{:?}", leftovers(&key));
    assert!(!ping(None, &t0.ip));
    destroy(&key).unwrap();
    drop((t0, t1));
}

/// A leftover of the same key (as after a crash) is replaced by create; destroying one
/// key leaves another key's hosts whole; subnets already routed are refused.
#[test]
fn keys_are_independent_and_leftovers_are_replaced() {
    let a = HostsGuard::new(1);
    let b = HostsGuard::new(1);
    let before = leftovers(a.key()).unwrap();
    // Same key again without destroy: the old ones are removed first.
    let again = {
        let _one = CREATE.lock().unwrap_or_else(|p| p.into_inner());
        create(&a.hosts.plan).unwrap()
    };
    assert_eq!(again, a.hosts);
    assert_eq!(leftovers(a.key()).unwrap(), before);

    destroy(b.key()).unwrap();
    assert!(leftovers(b.key()).unwrap().is_empty());
    assert_eq!(leftovers(a.key()).unwrap(), before);
    assert!(ping(
        Some(&a.hosts.hosts()[0].netns),
        &a.hosts.gateway().to_string()
    ));

    // Another key on a's subnets is refused, and a is untouched.
    let key = hex8();
    let clash = TestHostsPlan::new(
        &key,
        1,
        &["a".to_owned()],
        a.hosts.plan.link_subnet(),
        vec![Cidr::new("10.215.255.0".parse().unwrap(), 24).unwrap()],
    )
    .unwrap();
    match create(&clash) {
        Err(CreateError::SubnetInUse { subnet, .. }) => {
            assert_eq!(subnet, a.hosts.plan.link_subnet())
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(leftovers(&key).unwrap().is_empty());
    assert_eq!(leftovers(a.key()).unwrap(), before);
}

/// The guard removes the hosts when a test panics.
#[test]
fn guard_cleans_up_on_panic() {
    let key = Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let g = HostsGuard::new(2);
        *key.lock().unwrap() = Some(g.key().to_owned());
        panic!("on purpose");
    }));
    assert!(result.is_err());
    let key = key.into_inner().unwrap().unwrap();
    assert!(leftovers(&key).unwrap().is_empty());
}
