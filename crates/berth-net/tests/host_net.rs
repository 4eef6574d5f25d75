//! Real bridges, namespaces and veths (run as root). Every test makes its own uniquely
//! named objects in its own 10.213.X.0/24 subnet, removes them on drop even when it
//! panics, and only sends traffic to addresses inside namespaces it made or to loopback.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_net::bridge::{ensure_bridge, forwarding_sysctl, remove_bridge, BridgeError};
use berth_net::ip::{IpError, IP_BIN};
use berth_net::links::{is_bridge, link_exists, list_links_with_prefix};
use berth_net::netns::{
    create_isolated_netns, create_task_netns, destroy_task_netns, list_netns_with_prefix,
    netns_exists, NetnsError, TaskNet, TaskNetSpec,
};
use berth_net::{Cidr, Ipam};

mod common;

use common::{hex8, ip_out, Proc};

const PYTHON: &str = "/usr/bin/python3";

/// A 10.213.X.0/24 no other test in this process holds and no interface on the host uses.
fn fresh_subnet() -> Cidr {
    static TAKEN: Mutex<Option<HashSet<u8>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    loop {
        let mut b = [0u8; 1];
        getrandom::getrandom(&mut b).unwrap();
        let third = b[0];
        let prefix = format!("10.213.{third}.");
        if taken.contains(&third) || ip_out(&["-4", "-o", "addr"]).contains(&prefix) {
            continue;
        }
        taken.insert(third);
        return Cidr::new(Ipv4Addr::new(10, 213, third, 0), 24).unwrap();
    }
}

/// A bridge removed on drop.
struct BridgeGuard {
    name: String,
    ipam: Ipam,
}

impl BridgeGuard {
    fn new() -> Self {
        let name = format!("bt{}", hex8());
        let ipam = Ipam::new(fresh_subnet()).unwrap();
        ensure_bridge(&name, ipam.gateway()).unwrap();
        Self { name, ipam }
    }

    /// A task network on this bridge, removed on drop.
    fn task(&mut self) -> TaskGuard {
        let address = self.ipam.allocate().unwrap();
        self.task_at(address)
    }

    /// A task network on this bridge with `address`, removed on drop.
    fn task_at(&self, address: Cidr) -> TaskGuard {
        let id = hex8();
        let spec = TaskNetSpec {
            netns: format!("bn-{id}"),
            bridge: self.name.clone(),
            address,
            gateway: self.ipam.gateway().addr(),
            host_veth: format!("bv{id}"),
            mtu: None,
        };
        let net = create_task_netns(&spec).unwrap();
        TaskGuard { net }
    }
}

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        if let Err(e) = remove_bridge(&self.name) {
            eprintln!("cleanup: {e:?}");
        }
    }
}

struct TaskGuard {
    net: TaskNet,
}

impl TaskGuard {
    fn ip(&self) -> Ipv4Addr {
        self.net.address.addr()
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Err(e) = destroy_task_netns(&self.net.netns, Some(&self.net.host_veth)) {
            eprintln!("cleanup: {e:?}");
        }
    }
}

/// A namespace (and optional veth) name pair removed on drop, for tests that call the
/// create functions themselves.
struct NameGuard(String, Option<String>);

impl Drop for NameGuard {
    fn drop(&mut self) {
        let _ = destroy_task_netns(&self.0, self.1.as_deref());
    }
}

/// Reads to EOF, answers `pong:` + what it read, closes; serves forever.
const TCP_SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    data = b""
    while True:
        d = c.recv(65536)
        if not d:
            break
        data += d
    c.sendall(b"pong:" + data)
    c.close()
"#;

/// Sends argv[3], half-closes, prints the whole reply.
const TCP_CLIENT: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(sys.argv[3].encode())
c.shutdown(socket.SHUT_WR)
data = b""
while True:
    d = c.recv(65536)
    if not d:
        break
    data += d
print(data.decode(), end="")
"#;

/// Echoes each datagram back with a `udp:` prefix.
const UDP_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(65535)
    s.sendto(b"udp:" + d, a)
"#;

/// Starts a Python server inside `ns` and waits for its "ready" line.
fn serve_in(ns: &str, script: &str, port: u16) -> Proc {
    let mut child = Command::new(IP_BIN)
        .args(["netns", "exec", ns, PYTHON, "-c", script, &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    proc
}

fn tcp_round_trip(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(msg).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    got
}

/// ensure_bridge run twice leaves one bridge with the gateway address once, up, with IP
/// forwarding from it off; remove_bridge is idempotent and refuses non-bridges.
#[test]
fn ensure_bridge_is_idempotent() {
    let br = BridgeGuard::new();
    let gw = br.ipam.gateway();
    ensure_bridge(&br.name, gw).unwrap();
    assert!(is_bridge(&br.name));
    let addrs = ip_out(&["-4", "-o", "addr", "show", "dev", &br.name]);
    assert_eq!(addrs.matches(&format!("inet {gw} ")).count(), 1, "{addrs}");
    assert!(ip_out(&["-o", "link", "show", "dev", &br.name]).contains(",UP"));
    let fwd = std::fs::read_to_string(forwarding_sysctl(&br.name)).unwrap();
    assert_eq!(fwd.trim(), "0");
    remove_bridge(&br.name).unwrap();
    assert!(!link_exists(&br.name));
    remove_bridge(&br.name).unwrap();

    // A non-bridge interface (a veth) of that name is neither taken over nor deleted.
    let dummy = format!("bd{}", hex8());
    let peer = format!("be{}", hex8());
    let st = Command::new(IP_BIN)
        .args(["link", "add", &dummy, "type", "veth", "peer", "name", &peer])
        .status()
        .unwrap();
    assert!(st.success());
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = Command::new(IP_BIN).args(["link", "del", &self.0]).status();
        }
    }
    let _del = Del(dummy.clone());
    assert!(matches!(
        ensure_bridge(&dummy, gw),
        Err(BridgeError::NotABridge { .. })
    ));
    assert!(matches!(
        remove_bridge(&dummy),
        Err(BridgeError::NotABridge { .. })
    ));
    assert!(link_exists(&dummy));
}

/// Two task namespaces on one bridge reach each other and the host reaches them; each has
/// its default route via the gateway inside its namespace, and the host's routes do not
/// change beyond the bridge's own subnet.
#[test]
fn tasks_reach_each_other_and_host() {
    let host_default = ip_out(&["route", "show", "default"]);
    let mut br = BridgeGuard::new();
    let a = br.task();
    let b = br.task();
    assert_eq!(
        a.net.netns_path,
        std::path::Path::new("/var/run/netns").join(&a.net.netns)
    );
    let _server_b = serve_in(&b.net.netns, TCP_SERVER, 7000);
    let _server_a = serve_in(&a.net.netns, TCP_SERVER, 7000);

    // host → task
    let got = tcp_round_trip(SocketAddr::from((b.ip(), 7000)), b"from-host");
    assert_eq!(got, b"pong:from-host");
    let got = tcp_round_trip(SocketAddr::from((a.ip(), 7000)), b"from-host");
    assert_eq!(got, b"pong:from-host");

    // task → task
    let out = Command::new(IP_BIN)
        .args(["netns", "exec", &a.net.netns, PYTHON, "-c", TCP_CLIENT])
        .args([&b.ip().to_string(), "7000", "from-a"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pong:from-a");

    let routes = ip_out(&["-n", &a.net.netns, "route"]);
    let gw = br.ipam.gateway().addr();
    assert!(
        routes.contains(&format!("default via {gw} dev eth0")),
        "{routes}"
    );
    let links = ip_out(&["-n", &a.net.netns, "-o", "link"]);
    assert_eq!(links.lines().count(), 2, "lo and eth0 only: {links}");
    assert_eq!(ip_out(&["route", "show", "default"]), host_default);
}

/// The bridge keeps its own MAC address while tasks come and go. Without one it takes
/// the lowest MAC of its ports: a task whose veth has a lower MAC joins (or that one
/// leaves), the bridge's MAC changes, and every other task still sends its answers to
/// the host to the old one, so the host's connections to them hang until their
/// neighbour entries are probed again (seconds). Here a task's host-side veth gets the
/// lowest locally administered MAC and is removed again; the host reaches the other
/// task at once, each time.
#[test]
fn bridge_mac_stays_while_tasks_come_and_go() {
    let mut br = BridgeGuard::new();
    let a = br.task();
    let _server = serve_in(&a.net.netns, TCP_SERVER, 7000);
    let addr_file = format!("/sys/class/net/{}/address", br.name);
    let mac = || std::fs::read_to_string(&addr_file).unwrap();
    let before = mac();
    let quick = |what: &str| {
        let started = Instant::now();
        let got = tcp_round_trip(SocketAddr::from((a.ip(), 7000)), what.as_bytes());
        assert_eq!(got, format!("pong:{what}").as_bytes());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what}: the host took {:?} to reach a task",
            started.elapsed()
        );
    };
    quick("before");
    {
        let b = br.task();
        common::ip_ok(&[
            "link",
            "set",
            "dev",
            &b.net.host_veth,
            "address",
            "02:00:00:00:00:01",
        ]);
        assert_eq!(
            mac(),
            before,
            "a port with a lower MAC changed the bridge's"
        );
        quick("while-b");
    }
    assert_eq!(
        mac(),
        before,
        "the lowest port leaving changed the bridge's MAC"
    );
    quick("after-b");
}

/// A task that gets the address of one that just stopped is reached at once: its MAC
/// follows its address, so the host's neighbour entry for the address (still REACHABLE
/// from talking to the old task) stays right. With random MACs the host kept sending
/// to the old task's MAC for up to ~45 s.
#[test]
fn reused_address_is_reached_at_once() {
    let mut br = BridgeGuard::new();
    // Another task keeps the bridge up (with no port left it loses its carrier, and the
    // kernel drops its neighbour entries).
    let _other = br.task();
    let old = br.task();
    let address = old.net.address;
    let mac = |t: &TaskGuard| ip_out(&["-n", &t.net.netns, "-o", "link", "show", "dev", "eth0"]);
    {
        let _server = serve_in(&old.net.netns, TCP_SERVER, 7000);
        let got = tcp_round_trip(SocketAddr::from((old.ip(), 7000)), b"old");
        assert_eq!(got, b"pong:old");
    }
    let old_link = mac(&old);
    drop(old);
    let new = br.task_at(address);
    assert_eq!(
        berth_net::links::parse_link_mac(&mac(&new)),
        berth_net::links::parse_link_mac(&old_link),
        "the MAC follows the address"
    );
    let _server = serve_in(&new.net.netns, TCP_SERVER, 7000);
    let started = Instant::now();
    let got = tcp_round_trip(SocketAddr::from((new.ip(), 7000)), b"new");
    assert_eq!(got, b"pong:new");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the host took {:?} to reach the task on a reused address",
        started.elapsed()
    );
}

/// A bridge made before bridges had a MAC of their own (by hand here, with a port)
/// keeps the MAC it has when the agent takes it over (its tasks know that one), and
/// from then on it stays while ports come and go.
#[test]
fn existing_bridge_keeps_and_pins_its_mac() {
    let name = format!("bt{}", hex8());
    common::ip_ok(&["link", "add", "name", &name, "type", "bridge"]);
    let _br = common::LinkGuard(name.clone());
    let port = |mac: &str| {
        let (a, b) = (format!("bp{}", hex8()), format!("bq{}", hex8()));
        common::ip_ok(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        let guard = common::LinkGuard(a.clone());
        common::ip_ok(&["link", "set", "dev", &a, "address", mac]);
        common::ip_ok(&["link", "set", "dev", &a, "master", &name]);
        guard
    };
    let addr_file = format!("/sys/class/net/{name}/address");
    let mac = || {
        std::fs::read_to_string(&addr_file)
            .unwrap()
            .trim()
            .to_string()
    };
    let first = port("02:00:00:00:00:05");
    assert_eq!(
        mac(),
        "02:00:00:00:00:05",
        "a bridge without its own MAC takes its port's"
    );
    let gw = Ipam::new(fresh_subnet()).unwrap().gateway();
    ensure_bridge(&name, gw).unwrap();
    assert_eq!(
        mac(),
        "02:00:00:00:00:05",
        "taking the bridge over changed its MAC"
    );
    let lower = port("02:00:00:00:00:01");
    drop(first);
    drop(lower);
    assert_eq!(
        mac(),
        "02:00:00:00:00:05",
        "ports coming and going changed the MAC"
    );
}

/// Task traffic cannot be routed off the machine: the kernel's route lookup for a packet
/// arriving on the bridge from a task towards an outside address (198.51.100.1, TEST-NET-2)
/// fails, while the gateway is still delivered locally. A lookup only: nothing is sent.
#[test]
fn task_traffic_is_not_forwarded_off_machine() {
    let mut br = BridgeGuard::new();
    let t = br.task();
    let from = t.ip().to_string();
    let lookup = |dst: &str| {
        Command::new(IP_BIN)
            .args(["route", "get", dst, "from", &from, "iif", &br.name])
            .output()
            .unwrap()
    };
    let out = lookup("198.51.100.1");
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let gw = br.ipam.gateway().addr().to_string();
    let out = lookup(&gw);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("local "));
    // Inside the namespace: the connected subnet and the default via the gateway, no more.
    let routes = ip_out(&["-n", &t.net.netns, "-4", "route"]);
    assert_eq!(routes.lines().count(), 2, "{routes}");
}

/// Destroy removes the namespace and both veth ends and is idempotent.
#[test]
fn destroy_leaves_nothing() {
    let mut br = BridgeGuard::new();
    let t = br.task();
    let (ns, hv) = (t.net.netns.clone(), t.net.host_veth.clone());
    assert!(netns_exists(&ns) && link_exists(&hv));
    assert_eq!(
        list_netns_with_prefix(&ns).unwrap(),
        std::slice::from_ref(&ns)
    );
    assert_eq!(
        list_links_with_prefix(&hv).unwrap(),
        std::slice::from_ref(&hv)
    );
    destroy_task_netns(&ns, Some(&hv)).unwrap();
    assert!(list_netns_with_prefix(&ns).unwrap().is_empty());
    assert!(list_links_with_prefix(&hv).unwrap().is_empty());
    destroy_task_netns(&ns, Some(&hv)).unwrap();
    destroy_task_netns(&ns, None).unwrap();
    drop(t);
}

/// A `none`-mode namespace has loopback up and nothing else.
#[test]
fn isolated_netns_has_only_loopback() {
    let ns = format!("bn-{}", hex8());
    let _g = NameGuard(ns.clone(), None);
    let path = create_isolated_netns(&ns).unwrap();
    assert!(path.exists());
    let links = ip_out(&["-n", &ns, "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains(",UP"), "{links}");
    assert!(matches!(
        create_isolated_netns(&ns),
        Err(NetnsError::NetnsExists(_))
    ));
    destroy_task_netns(&ns, None).unwrap();
    assert!(!path.exists());
}

/// A failed create names the step and the interface and leaves nothing behind; existing
/// namespaces and interfaces are refused and left alone.
#[test]
fn failed_create_rolls_back() {
    let mut br = BridgeGuard::new();
    let id = hex8();
    let spec = TaskNetSpec {
        netns: format!("bn-{id}"),
        bridge: format!("bx{id}"), // no such bridge
        address: br.ipam.allocate().unwrap(),
        gateway: br.ipam.gateway().addr(),
        host_veth: format!("bv{id}"),
        mtu: Some(1400),
    };
    let _g = NameGuard(spec.netns.clone(), Some(spec.host_veth.clone()));
    match create_task_netns(&spec) {
        Err(NetnsError::Ip(IpError::Failed {
            step,
            object,
            stderr,
            ..
        })) => {
            assert_eq!(step, "attach host veth to bridge");
            assert_eq!(object, spec.host_veth);
            assert!(!stderr.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!netns_exists(&spec.netns));
    assert!(!link_exists(&spec.host_veth));

    let t = br.task();
    let again = TaskNetSpec {
        bridge: br.name.clone(),
        netns: t.net.netns.clone(),
        ..spec.clone()
    };
    assert!(matches!(
        create_task_netns(&again),
        Err(NetnsError::NetnsExists(_))
    ));
    let again = TaskNetSpec {
        bridge: br.name.clone(),
        host_veth: t.net.host_veth.clone(),
        ..spec
    };
    assert!(matches!(
        create_task_netns(&again),
        Err(NetnsError::LinkExists(_))
    ));
    assert!(netns_exists(&t.net.netns) && link_exists(&t.net.host_veth));
    // Deleting by a name that is not a veth is refused.
    assert!(matches!(
        destroy_task_netns(&t.net.netns, Some(&br.name)),
        Err(NetnsError::NotAVeth(_))
    ));
    assert!(link_exists(&br.name));
}

/// The TCP proxy on a loopback port forwards bytes both ways, with half-close, to a
/// listener inside a task namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_into_namespace() {
    let mut br = BridgeGuard::new();
    let t = br.task();
    let _server = serve_in(&t.net.netns, TCP_SERVER, 8080);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(berth_net::run_tcp_proxy(
        listener,
        SocketAddr::from((t.ip(), 8080)),
        async {
            let _ = rx.await;
        },
    ));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let got = tokio::task::spawn_blocking(move || {
        let got = tcp_round_trip(front, &big);
        assert_eq!(&got[..5], b"pong:");
        assert!(got[5..] == big[..], "payload came back intact");
        tcp_round_trip(front, b"second")
    })
    .await
    .unwrap();
    assert_eq!(got, b"pong:second");
    stop.send(()).unwrap();
    proxy.await.unwrap();
}

/// The UDP proxy on a loopback port forwards datagrams to a task and the replies back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_proxy_into_namespace() {
    let mut br = BridgeGuard::new();
    let t = br.task();
    let _server = serve_in(&t.net.netns, UDP_SERVER, 5353);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let front = sock.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(berth_net::run_udp_proxy(
        sock,
        SocketAddr::from((t.ip(), 5353)),
        Duration::from_secs(5),
        async {
            let _ = rx.await;
        },
    ));
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(front).await.unwrap();
    let mut buf = [0u8; 1024];
    for msg in ["hello", "again"] {
        client.send(msg.as_bytes()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("reply in time")
            .unwrap();
        assert_eq!(&buf[..n], format!("udp:{msg}").as_bytes());
    }
    stop.send(()).unwrap();
    proxy.await.unwrap();
}

/// The guards remove the bridge, namespace and veth when a test panics.
#[test]
fn guards_clean_up_on_panic() {
    let made = Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut br = BridgeGuard::new();
        let t = br.task();
        *made.lock().unwrap() = Some((
            br.name.clone(),
            t.net.netns.clone(),
            t.net.host_veth.clone(),
        ));
        panic!("on purpose");
    }));
    assert!(result.is_err());
    let (bridge, ns, veth) = made.into_inner().unwrap().unwrap();
    assert!(!link_exists(&bridge) && !netns_exists(&ns) && !link_exists(&veth));
}

/// Not a test: measures create+destroy of task networks for docs/net.md.
/// `cargo test -p berth-net --test host_net -- --ignored --nocapture measure`
#[test]
#[ignore]
fn measure_create_destroy() {
    const N: u32 = 50;
    let mut br = BridgeGuard::new();
    let (mut create, mut destroy) = (Duration::ZERO, Duration::ZERO);
    let mut worst = (Duration::ZERO, Duration::ZERO);
    for _ in 0..N {
        let t0 = Instant::now();
        let t = br.task();
        let c = t0.elapsed();
        let t1 = Instant::now();
        destroy_task_netns(&t.net.netns, Some(&t.net.host_veth)).unwrap();
        let d = t1.elapsed();
        br.ipam.release(t.ip());
        drop(t);
        create += c;
        destroy += d;
        worst = (worst.0.max(c), worst.1.max(d));
    }
    println!(
        "task network over {N} runs: create mean {:?} (max {:?}), destroy mean {:?} (max {:?})",
        create / N,
        worst.0,
        destroy / N,
        worst.1
    );
}
