//! The crate answers for the network namespace of the process calling it, as an agent
//! started with `nsenter --net=/run/netns/<host>` needs (run as root).
//!
//! The test makes a namespace, then runs this test binary again inside it with
//! `nsenter --net=...` (which, unlike `ip netns exec`, keeps the root's `/sys` mount —
//! exactly the agent's situation) and an environment variable that turns on
//! `inner_checks`. The outer test passes only if the inner run printed its marker.

mod common;

use std::path::Path;
use std::process::Command;

use berth_net::bridge::{forwarding_sysctl, IP_FORWARD_SYSCTL};
use berth_net::links::{is_bridge, is_veth, link_exists, list_links_with_prefix};
use berth_net::routes::default_route;
use berth_net::{ensure_bridge, ensure_bridge_with, remove_bridge, BridgeConfig, BridgeError};
use common::{hex8, ip_ok, LinkGuard, NetnsGuard};

/// Names handed to the inner run: `<inner bridge> <inner veth> <root bridge> <id>`.
const INNER_ENV: &str = "BERTH_NET_TEST_INNER";
/// Printed by the inner run when every check passed.
const MARK: &str = "inner-checks-passed";

fn read_trim(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

/// Not a test on its own: does nothing unless re-executed by
/// `links_and_forwarding_follow_the_callers_netns` inside a namespace.
#[test]
fn inner_checks() {
    let Ok(names) = std::env::var(INNER_ENV) else {
        return;
    };
    let v: Vec<&str> = names.split(' ').collect();
    let [inner_br, inner_veth, root_br, id] = v[..] else {
        panic!("bad {INNER_ENV}: {names}");
    };
    // The trap is real: sysfs here still shows the root's interfaces, not ours.
    assert!(Path::new("/sys/class/net").join(root_br).exists());
    assert!(!Path::new("/sys/class/net").join(inner_br).exists());

    assert_eq!(default_route().unwrap(), None);
    assert!(link_exists(inner_br) && link_exists(inner_veth) && link_exists("lo"));
    assert!(!link_exists(root_br));
    assert!(is_bridge(inner_br));
    assert!(!is_bridge(inner_veth) && !is_bridge(root_br));
    assert!(is_veth(inner_veth).unwrap());
    assert_eq!(
        list_links_with_prefix(&format!("bq{id}")).unwrap(),
        [inner_br]
    );
    assert!(list_links_with_prefix(root_br).unwrap().is_empty());

    // A bridge with forwarding on: idempotent (the second call must see the bridge
    // exists, or `link add` fails), and forwarding is on for it and the namespace.
    let fwd = format!("bf{id}");
    let gw = "10.215.255.1/24".parse().unwrap();
    let on = BridgeConfig { forwarding: true };
    ensure_bridge_with(&fwd, gw, on).unwrap();
    ensure_bridge_with(&fwd, gw, on).unwrap();
    assert_eq!(read_trim(forwarding_sysctl(&fwd)), "1");
    assert_eq!(read_trim(IP_FORWARD_SYSCTL), "1");
    // The default stays off, per bridge, in the same namespace.
    let plain = format!("bp{id}");
    ensure_bridge(&plain, "10.215.254.1/24".parse().unwrap()).unwrap();
    assert_eq!(read_trim(forwarding_sysctl(&plain)), "0");
    // remove_bridge finds and checks bridges of this namespace.
    remove_bridge(&plain).unwrap();
    assert!(!link_exists(&plain));
    assert!(matches!(
        remove_bridge(inner_veth),
        Err(BridgeError::NotABridge { .. })
    ));
    println!("{MARK}");
}

/// Inside a namespace entered with `nsenter --net`, link_exists, is_bridge,
/// list_links_with_prefix, ensure_bridge and remove_bridge see that namespace's
/// interfaces and not the root's; forwarding can be turned on there and changes nothing
/// in the root namespace; where there is a default route (the root namespace) it is
/// refused.
#[test]
fn links_and_forwarding_follow_the_callers_netns() {
    let id = hex8();
    let root_br = format!("bt{id}");
    ip_ok(&["link", "add", "name", &root_br, "type", "bridge"]);
    let _root_br = LinkGuard(root_br.clone());
    let ns = NetnsGuard::new(format!("bn-{id}"));
    let (inner_br, inner_veth) = (format!("bq{id}"), format!("bw{id}"));
    ip_ok(&[
        "-n", &ns.0, "link", "add", "name", &inner_br, "type", "bridge",
    ]);
    ip_ok(&[
        "-n",
        &ns.0,
        "link",
        "add",
        "name",
        &inner_veth,
        "type",
        "veth",
        "peer",
        "name",
        &format!("bx{id}"),
    ]);
    // New namespaces inherit ip_forward from the root one (1 on this machine): start from
    // 0 so that the inner run's 1 proves its write.
    ip_ok(&[
        "netns",
        "exec",
        &ns.0,
        "/usr/sbin/sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_forward=0",
    ]);
    let root_forward = read_trim(IP_FORWARD_SYSCTL);

    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.0))
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "inner_checks", "--nocapture", "--test-threads=1"])
        .env(INNER_ENV, format!("{inner_br} {inner_veth} {root_br} {id}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(MARK),
        "inner run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The root namespace is untouched by the inner run.
    assert_eq!(read_trim(IP_FORWARD_SYSCTL), root_forward);
    assert!(!link_exists(&format!("bf{id}")));
    assert!(is_bridge(&root_br) && !link_exists(&inner_br));

    // Forwarding is refused where a default route is, before anything is made.
    assert!(
        default_route().unwrap().is_some(),
        "this test expects a default route in the root namespace"
    );
    let refused = format!("bg{id}");
    let _g = LinkGuard(refused.clone());
    assert!(matches!(
        ensure_bridge_with(
            &refused,
            "10.215.253.1/24".parse().unwrap(),
            BridgeConfig { forwarding: true }
        ),
        Err(BridgeError::ForwardingWithDefaultRoute { .. })
    ));
    assert!(!link_exists(&refused));
}
