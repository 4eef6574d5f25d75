//! Per-task network namespaces: `awsvpc`/`bridge`-style tasks get a namespace with one veth
//! to the node bridge; `none` tasks get a namespace with only loopback.
//!
//! Blocking (runs `ip`); call from `spawn_blocking` in async code. A task namespace is made
//! by two `ip -batch` runs (one in the host namespace, one inside the new namespace) rather
//! than ~8 separate `ip` processes; docs/net.md has the measured times.
//!
//! The namespace is a bind mount at `/var/run/netns/<name>` (ip-netns(8)); runc joins it via
//! the `network` namespace `path` in config.json.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ip::{self, Batch, Cmd, IpError};
use crate::ipam::Cidr;
use crate::links::{is_veth, link_exists, list_dir_with_prefix, ListError};
use crate::names::{validate_ifname, validate_netns_name, NameError};

/// Where `ip netns` keeps named namespaces (ip-netns(8)).
pub const NETNS_DIR: &str = "/var/run/netns";

/// The name of the task's interface inside its namespace.
pub const TASK_IFNAME: &str = "eth0";

/// Smallest MTU IPv4 allows (RFC 791: every host must accept 68-byte datagrams).
pub const MIN_MTU: u32 = 68;
/// Largest MTU a veth accepts.
pub const MAX_MTU: u32 = 65535;

/// What a task's network should look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskNetSpec {
    /// Namespace name (a file under [`NETNS_DIR`]).
    pub netns: String,
    /// The node bridge the host end of the veth joins (see [`crate::bridge::ensure_bridge`]).
    pub bridge: String,
    /// The task's address with the subnet prefix, e.g. from [`crate::ipam::Ipam::allocate`].
    pub address: Cidr,
    /// The bridge's address: the task's default gateway.
    pub gateway: Ipv4Addr,
    /// Name of the host end of the veth pair (at most 15 bytes).
    pub host_veth: String,
    /// MTU of both veth ends, in bytes; `None` keeps the kernel default (1500).
    pub mtu: Option<u32>,
}

/// A task network that exists (serialisable, so the agent can persist it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskNet {
    /// Namespace name.
    pub netns: String,
    /// `/var/run/netns/<name>`: hand this to runc.
    pub netns_path: PathBuf,
    /// The host end of the veth pair.
    pub host_veth: String,
    /// The task's interface inside the namespace ([`TASK_IFNAME`]).
    pub ifname: String,
    /// The task's address with prefix.
    pub address: Cidr,
    /// The task's default gateway.
    pub gateway: Ipv4Addr,
}

/// Why a namespace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("invalid name")]
    Name(#[from] NameError),
    #[error("task address {address} and gateway {gateway} are not two distinct host addresses of one subnet")]
    BadAddress { address: Cidr, gateway: Ipv4Addr },
    #[error("mtu {0} is outside {MIN_MTU}-{MAX_MTU}")]
    BadMtu(u32),
    #[error("network namespace {0} already exists")]
    NetnsExists(String),
    #[error("interface {0} already exists")]
    LinkExists(String),
    #[error("interface {0} is not a veth; refusing to delete it")]
    NotAVeth(String),
    #[error(transparent)]
    Ip(#[from] IpError),
    #[error("listing leftovers")]
    List(#[from] ListError),
}

/// Path of a named namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether a named namespace exists.
pub fn netns_exists(name: &str) -> bool {
    netns_path(name).exists()
}

impl TaskNetSpec {
    /// Checks every field before anything is run.
    pub fn validate(&self) -> Result<(), NetnsError> {
        validate_netns_name(&self.netns)?;
        validate_ifname(&self.bridge)?;
        validate_ifname(&self.host_veth)?;
        let block = self.address.block();
        let host =
            |ip: Ipv4Addr| block.contains(ip) && ip != block.network() && ip != block.broadcast();
        if block.host_count() < 2
            || !host(self.address.addr())
            || !host(self.gateway)
            || self.address.addr() == self.gateway
        {
            return Err(NetnsError::BadAddress {
                address: self.address,
                gateway: self.gateway,
            });
        }
        if let Some(mtu) = self.mtu {
            if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
                return Err(NetnsError::BadMtu(mtu));
            }
        }
        Ok(())
    }

    /// The script run in the host namespace (pure): make the namespace, make the veth pair
    /// with its peer created directly inside the namespace as `eth0` (no move and rename
    /// step) with the MAC of its address ([`task_mac`]), attach the host end to the
    /// bridge and bring it up.
    pub fn host_plan(&self) -> Batch {
        let (ns, hv) = (self.netns.as_str(), self.host_veth.as_str());
        let mtu = self.mtu.map(|m| m.to_string());
        let mac = task_mac(self.address.addr());
        let mut add = vec!["link", "add", "name", hv];
        if let Some(m) = &mtu {
            add.extend(["mtu", m]);
        }
        add.extend(["type", "veth", "peer", "name", TASK_IFNAME, "address", &mac]);
        if let Some(m) = &mtu {
            add.extend(["mtu", m]);
        }
        add.extend(["netns", ns]);
        Batch {
            netns: None,
            cmds: vec![
                Cmd::new("add network namespace", ns, &["netns", "add", ns]),
                Cmd::new("add veth pair", hv, &add),
                Cmd::new(
                    "attach host veth to bridge",
                    hv,
                    &["link", "set", "dev", hv, "master", &self.bridge, "up"],
                ),
            ],
        }
    }

    /// The script run inside the namespace (pure): loopback up, address, `eth0` up, and the
    /// default route via the bridge gateway — the only route added, and only in the task's
    /// own namespace.
    pub fn netns_plan(&self) -> Batch {
        let addr = self.address.to_string();
        let gw = self.gateway.to_string();
        Batch {
            netns: Some(self.netns.clone()),
            cmds: addressed_and_up(
                ["set task address", "bring up task interface"],
                &addr,
                TASK_IFNAME,
            )
            .into_iter()
            .chain([Cmd::new(
                "add default route via gateway",
                TASK_IFNAME,
                &["route", "add", "default", "via", &gw, "dev", TASK_IFNAME],
            )])
            .collect(),
        }
    }
}

/// A task's MAC address, derived from its IPv4 address (pure): `02:42` and the four
/// bytes of the address, as Docker does. Addresses are handed out lowest-free-first, so
/// a new task often gets the address of one that just stopped; with a random MAC the
/// host's neighbour entry for that address (still REACHABLE for up to ~45 s) would
/// point at the old task's MAC, and the host's connections to the new task (the load
/// balancer's, health checks', port mappings') would go nowhere until it expired.
/// With the MAC following the address the entry stays right.
pub fn task_mac(addr: Ipv4Addr) -> String {
    let [a, b, c, d] = addr.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The first lines of a script run inside a new namespace (pure): loopback up, `addr` on
/// `ifname`, `ifname` up; `steps` name the last two.
pub(crate) fn addressed_and_up(steps: [&'static str; 2], addr: &str, ifname: &str) -> Vec<Cmd> {
    vec![
        Cmd::new(
            "bring up loopback",
            "lo",
            &["link", "set", "dev", "lo", "up"],
        ),
        Cmd::new(steps[0], ifname, &["addr", "add", addr, "dev", ifname]),
        Cmd::new(steps[1], ifname, &["link", "set", "dev", ifname, "up"]),
    ]
}

/// Creates a task's namespace wired to the bridge. On failure everything this call made is
/// removed again; a namespace or host veth that already existed is refused, never touched.
pub fn create_task_netns(spec: &TaskNetSpec) -> Result<TaskNet, NetnsError> {
    spec.validate()?;
    if netns_exists(&spec.netns) {
        return Err(NetnsError::NetnsExists(spec.netns.clone()));
    }
    if link_exists(&spec.host_veth) {
        return Err(NetnsError::LinkExists(spec.host_veth.clone()));
    }
    if let Err(failure) = spec.host_plan().run() {
        match host_rollback(failure.line) {
            Rollback::Nothing => {}
            Rollback::Netns => undo(&spec.netns, None),
            Rollback::NetnsAndVeth => undo(&spec.netns, Some(&spec.host_veth)),
        }
        return Err(failure.error.into());
    }
    if let Err(failure) = spec.netns_plan().run() {
        undo(&spec.netns, Some(&spec.host_veth));
        return Err(failure.error.into());
    }
    tracing::debug!(netns = %spec.netns, address = %spec.address, "task network ready");
    Ok(TaskNet {
        netns: spec.netns.clone(),
        netns_path: netns_path(&spec.netns),
        host_veth: spec.host_veth.clone(),
        ifname: TASK_IFNAME.to_owned(),
        address: spec.address,
        gateway: spec.gateway,
    })
}

/// What to remove after the host-side script failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rollback {
    Nothing,
    Netns,
    NetnsAndVeth,
}

/// Line 0 of [`TaskNetSpec::host_plan`] makes the namespace and line 1 the veth pair, so a
/// failure on line N leaves lines 0..N made. An unknown line (an argument error) undoes
/// both: the caller checked beforehand that neither existed, so nothing foreign is removed.
fn host_rollback(failed_line: Option<usize>) -> Rollback {
    match failed_line {
        Some(0) => Rollback::Nothing,
        Some(1) => Rollback::Netns,
        _ => Rollback::NetnsAndVeth,
    }
}

fn undo(netns: &str, host_veth: Option<&str>) {
    if let Err(e) = destroy_task_netns(netns, host_veth) {
        tracing::warn!(netns, error = %e, "could not undo a half-made task network");
    }
}

/// Creates a namespace with only loopback up (`none` network mode) and returns its path.
pub fn create_isolated_netns(name: &str) -> Result<PathBuf, NetnsError> {
    validate_netns_name(name)?;
    if netns_exists(name) {
        return Err(NetnsError::NetnsExists(name.to_owned()));
    }
    ip::run("add network namespace", name, &["netns", "add", name])?;
    let up = ip::run(
        "bring up loopback",
        "lo",
        &["-n", name, "link", "set", "dev", "lo", "up"],
    );
    if let Err(e) = up {
        undo(name, None);
        return Err(e.into());
    }
    Ok(netns_path(name))
}

/// Removes a task network: the host veth (which takes its peer with it) and the namespace.
/// Idempotent: a missing veth or namespace is fine. `host_veth` is `None` for namespaces
/// from [`create_isolated_netns`]; an interface of that name that is not a veth is refused.
///
/// Processes still inside the namespace keep it alive after the mount is gone (ip-netns(8));
/// stop the task's containers first.
pub fn destroy_task_netns(netns: &str, host_veth: Option<&str>) -> Result<(), NetnsError> {
    validate_netns_name(netns)?;
    if let Some(hv) = host_veth {
        validate_ifname(hv)?;
        if link_exists(hv) {
            match is_veth(hv) {
                Ok(true) => {
                    delete_if_present(hv, "delete host veth", &["link", "del", "dev", hv], || {
                        link_exists(hv)
                    })?
                }
                Ok(false) => return Err(NetnsError::NotAVeth(hv.to_owned())),
                Err(_) if !link_exists(hv) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if netns_exists(netns) {
        delete_if_present(
            netns,
            "delete network namespace",
            &["netns", "del", netns],
            || netns_exists(netns),
        )?;
    }
    Ok(())
}

/// Runs a delete; a failure is fine if the object is gone anyway (a concurrent cleanup).
fn delete_if_present(
    object: &str,
    step: &'static str,
    args: &[&str],
    still_there: impl Fn() -> bool,
) -> Result<(), NetnsError> {
    match ip::run(step, object, args) {
        Err(e) if still_there() => Err(e.into()),
        _ => Ok(()),
    }
}

/// Named namespaces whose names start with `prefix`, sorted (for cleanup after a crash).
pub fn list_netns_with_prefix(prefix: &str) -> Result<Vec<String>, NetnsError> {
    Ok(list_dir_with_prefix(Path::new(NETNS_DIR), prefix)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskNetSpec {
        TaskNetSpec {
            netns: "berth-task1".into(),
            bridge: "berth0".into(),
            address: "10.213.9.2/24".parse().unwrap(),
            gateway: "10.213.9.1".parse().unwrap(),
            host_veth: "vb-task1".into(),
            mtu: None,
        }
    }

    /// A task's MAC is 02:42 and its address's bytes: locally administered, unicast, and
    /// the same whenever the address is handed out again.
    #[test]
    fn mac_follows_the_address() {
        let ip: Ipv4Addr = "10.213.9.2".parse().unwrap();
        assert_eq!(task_mac(ip), "02:42:0a:d5:09:02");
        assert_eq!(task_mac(ip), task_mac("10.213.9.2".parse().unwrap()));
        assert_ne!(task_mac(ip), task_mac("10.213.9.3".parse().unwrap()));
    }

    /// The two scripts do exactly the documented steps, in order.
    #[test]
    fn plans() {
        assert_eq!(
            spec().host_plan().script(),
            "netns add berth-task1\n\
             link add name vb-task1 type veth peer name eth0 address 02:42:0a:d5:09:02 netns berth-task1\n\
             link set dev vb-task1 master berth0 up\n"
        );
        let inner = spec().netns_plan();
        assert_eq!(inner.netns.as_deref(), Some("berth-task1"));
        assert_eq!(
            inner.script(),
            "link set dev lo up\n\
             addr add 10.213.9.2/24 dev eth0\n\
             link set dev eth0 up\n\
             route add default via 10.213.9.1 dev eth0\n"
        );
    }

    /// A failure removes exactly what the lines before it made.
    #[test]
    fn rollback_matches_plan() {
        let plan = spec().host_plan();
        assert_eq!(plan.cmds[0].args[..2], ["netns", "add"]);
        assert_eq!(plan.cmds[1].args[..2], ["link", "add"]);
        assert_eq!(host_rollback(Some(0)), Rollback::Nothing);
        assert_eq!(host_rollback(Some(1)), Rollback::Netns);
        assert_eq!(host_rollback(Some(2)), Rollback::NetnsAndVeth);
        assert_eq!(host_rollback(None), Rollback::NetnsAndVeth);
    }

    /// An MTU goes on both ends of the pair.
    #[test]
    fn plan_with_mtu() {
        let s = TaskNetSpec {
            mtu: Some(1400),
            ..spec()
        };
        assert_eq!(
            s.host_plan().cmds[1].args.join(" "),
            "link add name vb-task1 mtu 1400 type veth peer name eth0 address 02:42:0a:d5:09:02 mtu 1400 netns berth-task1"
        );
    }

    /// Bad names, addresses and MTUs are refused before anything runs.
    #[test]
    fn validation() {
        assert!(spec().validate().is_ok());
        let bad = [
            TaskNetSpec {
                netns: "../x".into(),
                ..spec()
            },
            TaskNetSpec {
                bridge: "".into(),
                ..spec()
            },
            TaskNetSpec {
                host_veth: "veth-name-too-long".into(),
                ..spec()
            },
            TaskNetSpec {
                gateway: "10.213.9.2".parse().unwrap(),
                ..spec()
            },
            TaskNetSpec {
                gateway: "10.213.8.1".parse().unwrap(),
                ..spec()
            },
            TaskNetSpec {
                gateway: "10.213.9.0".parse().unwrap(),
                ..spec()
            },
            TaskNetSpec {
                address: "10.213.9.255/24".parse().unwrap(),
                ..spec()
            },
            TaskNetSpec {
                address: "10.213.9.2/31".parse().unwrap(),
                ..spec()
            },
            TaskNetSpec {
                mtu: Some(67),
                ..spec()
            },
            TaskNetSpec {
                mtu: Some(65536),
                ..spec()
            },
        ];
        for s in bad {
            assert!(s.validate().is_err(), "{s:?}");
            assert!(create_task_netns(&s).is_err(), "{s:?}");
        }
    }
}
