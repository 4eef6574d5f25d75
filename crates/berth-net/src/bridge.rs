//! The node's task bridge: a Linux bridge holding the gateway address of the task subnet.
//!
//! Blocking (runs `ip`). Tasks on one bridge talk at layer 2; the host reaches them through
//! the connected route the gateway address brings. Nothing here routes or NATs off the
//! machine: see [`ensure_bridge`] for the forwarding guard. The one exception,
//! [`BridgeConfig::forwarding`], is for an agent inside a test host's namespace (see
//! [`crate::testhosts`]) and is refused in a namespace with a default route.

use std::path::PathBuf;

use crate::ip::{self, Batch, Cmd, IpError};
use crate::ipam::Cidr;
use crate::links::{is_bridge, link_exists, link_mac};
use crate::names::{validate_ifname, NameError};
use crate::routes::default_route;

/// Why a bridge operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("invalid bridge name")]
    Name(#[from] NameError),
    #[error("gateway {gateway} is not a host address of its subnet")]
    BadGateway { gateway: Cidr },
    #[error("interface {name} exists and is not a bridge")]
    NotABridge { name: String },
    #[error("configuring bridge")]
    Ip(#[from] IpError),
    #[error("setting IP forwarding of bridge {name} to {value} ({path})")]
    Forwarding {
        name: String,
        value: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to turn on IP forwarding for bridge {name}: this network namespace has a default route ({route}), so forwarded traffic could leave the machine")]
    ForwardingWithDefaultRoute { name: String, route: String },
}

/// How the bridge is set up beyond its name and gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Route packets received on the bridge to other interfaces: turns on
    /// `net.ipv4.conf.<bridge>.forwarding` and `net.ipv4.ip_forward` of the caller's network
    /// namespace. Off by default (the built-in agent). Only for an agent running inside a
    /// test host's namespace, whose only routes lead to other test hosts' berth subnets;
    /// refused in a namespace with a default route (such as the machine's own).
    pub forwarding: bool,
}

/// The bridge's own MAC address (pure): locally administered, unicast, and derived
/// from the name, so it is the same every time the bridge is made.
///
/// A bridge without an address of its own takes the lowest MAC of its ports, so it
/// changes whenever a task's veth with a lower (random) MAC joins or the lowest one
/// leaves. Every task on the bridge still has the old MAC in its neighbour cache for
/// the gateway: its answers to the host go to an address nobody owns, and a connection
/// from the host (the load balancer's, a health check's, a port mapping's) hangs until
/// that entry is probed again, seconds later. Docker sets its bridge's MAC for the same
/// reason.
pub fn bridge_mac(name: &str) -> String {
    // FNV-1a, 64 bits: stable across builds and platforms.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let b = hash.to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[3], b[4], b[5], b[6], b[7]
    )
}

/// The `ip` script that brings the bridge to the wanted state (pure). `existing` is
/// the MAC address of the bridge if it exists already.
///
/// `addr replace` rather than `add` so that re-running is a no-op. A new bridge gets
/// [`bridge_mac`]; an existing one has its current MAC set as its own, which pins it
/// without changing it (a bridge made before this rule, with tasks on it, keeps the
/// address those tasks know).
pub fn bridge_plan(name: &str, gateway: Cidr, existing: Option<&str>) -> Batch {
    let gw = gateway.to_string();
    let mac = bridge_mac(name);
    let mut cmds = Vec::new();
    if let Some(current) = existing {
        cmds.push(Cmd::new(
            "pin bridge MAC address",
            name,
            &["link", "set", "dev", name, "address", current],
        ));
    } else {
        cmds.push(Cmd::new(
            "create bridge",
            name,
            &[
                "link", "add", "name", name, "address", &mac, "type", "bridge",
            ],
        ));
    }
    cmds.push(Cmd::new(
        "set gateway address",
        name,
        &["addr", "replace", &gw, "dev", name],
    ));
    cmds.push(Cmd::new(
        "bring up bridge",
        name,
        &["link", "set", name, "up"],
    ));
    Batch { netns: None, cmds }
}

/// The sysctl that decides whether packets received on `name` may be routed elsewhere.
///
/// `/proc/sys/net` belongs to the network namespace of the thread that opens the file
/// (proc_sys(5)), so this reads and writes the caller's namespace's value.
pub fn forwarding_sysctl(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys/net/ipv4/conf")
        .join(name)
        .join("forwarding")
}

/// The namespace-wide IPv4 forwarding switch of the caller's network namespace.
pub const IP_FORWARD_SYSCTL: &str = "/proc/sys/net/ipv4/ip_forward";

/// Creates the bridge if missing, sets the gateway address and brings it up. Idempotent.
///
/// Also writes `0` to `net.ipv4.conf.<bridge>.forwarding`: the kernel then never routes a
/// packet that a task sent through the bridge to another interface (ip-sysctl.rst,
/// `conf/interface/forwarding`: "whether packets received on this interface can be
/// forwarded"), so task traffic cannot leave the machine even where the host has
/// `net.ipv4.ip_forward = 1`. Switching between tasks on the bridge and traffic between the
/// host and tasks are not forwarding and are unaffected. A later write to
/// `net.ipv4.conf.all.forwarding` resets it; calling this again restores it.
pub fn ensure_bridge(name: &str, gateway: Cidr) -> Result<(), BridgeError> {
    ensure_bridge_with(name, gateway, BridgeConfig::default())
}

/// [`ensure_bridge`] with options. With `forwarding`, the bridge's
/// `net.ipv4.conf.<bridge>.forwarding` and the namespace's `net.ipv4.ip_forward` are set to
/// `1` instead, in the caller's network namespace only — after checking that the namespace
/// has no IPv4 default route, without which a forwarded packet can only go to the subnets
/// the namespace has routes for (a test host's: other test hosts' berth subnets).
/// Writing `ip_forward` sets `conf.all` and `conf.default` too (ip-sysctl.rst), so every
/// interface of that namespace forwards: the namespace's routes decide where to.
pub fn ensure_bridge_with(
    name: &str,
    gateway: Cidr,
    config: BridgeConfig,
) -> Result<(), BridgeError> {
    validate_ifname(name)?;
    let block = gateway.block();
    if block.nth_host(1).is_none()
        || gateway.addr() == block.network()
        || gateway.addr() == block.broadcast()
    {
        return Err(BridgeError::BadGateway { gateway });
    }
    if config.forwarding {
        if let Some(route) = default_route()? {
            return Err(BridgeError::ForwardingWithDefaultRoute {
                name: name.into(),
                route,
            });
        }
    }
    let exists = link_exists(name);
    if exists && !is_bridge(name) {
        return Err(BridgeError::NotABridge { name: name.into() });
    }
    let current = if exists {
        // Unreadable (it should not be): the name's own MAC.
        Some(
            link_mac(name)
                .ok()
                .flatten()
                .unwrap_or_else(|| bridge_mac(name)),
        )
    } else {
        None
    };
    bridge_plan(name, gateway, current.as_deref())
        .run()
        .map_err(|f| f.error)?;
    let write = |path: PathBuf, value: &'static str| {
        std::fs::write(&path, value).map_err(|source| BridgeError::Forwarding {
            name: name.into(),
            value,
            path,
            source,
        })
    };
    if config.forwarding {
        // ip_forward first: writing it resets every conf.*.forwarding of the namespace.
        write(IP_FORWARD_SYSCTL.into(), "1")?;
        write(forwarding_sysctl(name), "1")?;
    } else {
        write(forwarding_sysctl(name), "0")?;
    }
    tracing::debug!(bridge = name, %gateway, created = !exists, forwarding = config.forwarding, "bridge ready");
    Ok(())
}

/// Deletes the bridge. Idempotent: a missing bridge is fine; an interface of that name that
/// is not a bridge is left alone and reported.
pub fn remove_bridge(name: &str) -> Result<(), BridgeError> {
    validate_ifname(name)?;
    if !link_exists(name) {
        return Ok(());
    }
    if !is_bridge(name) {
        return Err(BridgeError::NotABridge { name: name.into() });
    }
    match ip::run("delete bridge", name, &["link", "del", "dev", name]) {
        // Someone else removed it between the check and the delete: the goal is reached.
        Err(_) if !link_exists(name) => Ok(()),
        other => other.map(drop).map_err(Into::into),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing bridge is created first; an existing one is only re-addressed and upped.
    #[test]
    fn plan() {
        let gw: Cidr = "10.213.9.1/24".parse().unwrap();
        let mac = bridge_mac("bt0");
        assert_eq!(
            bridge_plan("bt0", gw, None).script(),
            format!("link add name bt0 address {mac} type bridge\naddr replace 10.213.9.1/24 dev bt0\nlink set bt0 up\n")
        );
        assert_eq!(
            bridge_plan("bt0", gw, Some("02:00:00:00:00:07")).script(),
            "link set dev bt0 address 02:00:00:00:00:07\naddr replace 10.213.9.1/24 dev bt0\nlink set bt0 up\n"
        );
    }

    /// The bridge's MAC is a locally administered unicast address, the same for the
    /// same name and different for different names.
    #[test]
    fn mac_is_fixed_local_unicast() {
        let mac = bridge_mac("bt0");
        assert_eq!(mac, bridge_mac("bt0"));
        assert_ne!(mac, bridge_mac("bt1"));
        let bytes: Vec<u8> = mac
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        assert_eq!(bytes.len(), 6);
        assert_eq!(
            bytes[0] & 0b11,
            0b10,
            "locally administered, unicast: {mac}"
        );
    }

    /// Names and gateways are checked before anything runs.
    #[test]
    fn validates_before_running() {
        let gw: Cidr = "10.213.9.1/24".parse().unwrap();
        assert!(matches!(
            ensure_bridge("toolongbridgename", gw),
            Err(BridgeError::Name(_))
        ));
        assert!(matches!(
            ensure_bridge("a b", gw),
            Err(BridgeError::Name(_))
        ));
        for bad in [
            "10.213.9.0/24",
            "10.213.9.255/24",
            "10.213.9.1/32",
            "10.213.9.1/31",
        ] {
            let gw: Cidr = bad.parse().unwrap();
            assert!(
                matches!(
                    ensure_bridge("bt0", gw),
                    Err(BridgeError::BadGateway { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            forwarding_sysctl("bt0"),
            PathBuf::from("/proc/sys/net/ipv4/conf/bt0/forwarding")
        );
    }
}
