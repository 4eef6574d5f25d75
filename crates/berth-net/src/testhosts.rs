//! Test hosts: N network namespaces on one machine, joined by a bridge, each standing in
//! for one host of a multi-host berth (`berth server --hosts N --zones a,b` runs one
//! `berth agent` in each, via [`TestHost::command`]). See docs/net.md for the picture.
//!
//! The layout ([`TestHostsPlan`]) is pure and unit-tested: names, addresses, zones and the
//! `ip` scripts. [`create`], [`destroy`] and [`leftovers`] are blocking I/O through batched
//! `ip` commands, like [`crate::netns`].
//!
//! Everything stays on the machine: the routes added lead only to the link subnet and the
//! hosts' task subnets (no default route anywhere in a host namespace, so forwarding there,
//! which task traffic between hosts needs, can only reach berth's own subnets), and the
//! root-side bridge does not forward.
//!
//! Every name carries the key, and [`destroy`] removes only names that match the key's
//! patterns exactly ([`owns_link`], [`owns_netns`]), so runs with other keys side by side
//! are never touched. Keys are lowercase hex so that no key's names are another key's.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bridge::{bridge_plan, forwarding_sysctl, remove_bridge, BridgeError};
use crate::ip::{self, Batch, Cmd, IpError};
use crate::ipam::{Cidr, MAX_SUBNET_PREFIX};
use crate::links::{is_veth, link_exists, list_links_with_prefix, ListError};
use crate::netns::{
    addressed_and_up, list_netns_with_prefix, netns_exists, netns_path, NetnsError,
};
use crate::routes::{route_destinations, route_device, show_routes};

/// Longest key: `bh<key>h<i>` must fit in 15 bytes (IFNAMSIZ) with a one-digit index.
pub const MAX_KEY_LEN: usize = 11;
/// Most test hosts per key: the default task subnets give each key 8 /24s.
pub const MAX_HOSTS: usize = 8;
/// Number of default address slots; a key's slot picks its default subnets.
pub const SLOTS: u8 = 32;
/// Default link subnets: `10.214.<slot>.0/24`. berth's built-in agent uses 10.213.0.0/24
/// and the tests' servers 10.100-199.x.0/24, so this range clashes with neither.
pub const LINK_RANGE: Cidr = cidr(10, 214, 0, 0, 16);
/// Default task subnets: `10.215.<slot*8+i>.0/24` for host `i`.
pub const TASK_RANGE: Cidr = cidr(10, 215, 0, 0, 16);
/// The host's interface towards the bridge, inside its namespace.
pub const HOST_IFNAME: &str = "eth0";
/// Host `i` gets the link subnet's host address `FIRST_HOST_ADDRESS + i` (`.10`, `.11`, ...);
/// `.1` is the gateway on the root bridge.
pub const FIRST_HOST_ADDRESS: u32 = 10;
/// procps' `sysctl`, run inside a host's namespace with `ip netns exec`.
pub const SYSCTL_BIN: &str = "/usr/sbin/sysctl";
/// util-linux's `nsenter`, for starting a process in a host's namespace.
pub const NSENTER_BIN: &str = "/usr/bin/nsenter";
/// The sysctl settings inside every host namespace: forwarding on, so packets between its
/// `eth0` and its agent's task bridge are routed. (Writing `ip_forward` turns it on for
/// every interface of the namespace; `eth0` is named so the intent is explicit.) The agent
/// turns on forwarding for its bridge itself ([`crate::bridge::BridgeConfig::forwarding`]).
pub const HOST_SYSCTLS: [&str; 2] = ["net.ipv4.ip_forward=1", "net.ipv4.conf.eth0.forwarding=1"];
/// How long [`destroy`] waits for killed processes to leave a host namespace.
pub const KILL_WAIT: Duration = Duration::from_secs(2);

const fn cidr(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
    match Cidr::new(Ipv4Addr::new(a, b, c, d), prefix) {
        Some(c) => c,
        None => panic!("prefix above 32"),
    }
}

/// Why a layout was refused (before anything is run).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("test-hosts key {key:?} must be 1-{MAX_KEY_LEN} lowercase hex digits")]
    BadKey { key: String },
    #[error("{count} test hosts asked for; 1-{MAX_HOSTS} are possible")]
    BadCount { count: usize },
    #[error("no zones given; test hosts need at least one")]
    NoZones,
    #[error("zone {zone:?} must be 1-64 characters of A-Z a-z 0-9 _ - .")]
    BadZone { zone: String },
    #[error("link subnet {subnet} has no room for a gateway and {count} hosts from .{FIRST_HOST_ADDRESS}")]
    LinkSubnetTooSmall { subnet: Cidr, count: usize },
    #[error("{got} task subnets given for {expected} hosts")]
    TaskSubnetCount { expected: usize, got: usize },
    #[error("task subnet {subnet} is smaller than /{MAX_SUBNET_PREFIX}")]
    TaskSubnetTooSmall { subnet: Cidr },
    #[error("subnet {subnet} is not inside the private ranges of RFC 1918")]
    NotPrivate { subnet: Cidr },
    #[error("subnets {a} and {b} overlap")]
    Overlap { a: Cidr, b: Cidr },
    #[error("no free slot for {count} hosts: every default subnet is routed already")]
    NoFreeSlot { count: usize },
}

/// Why [`create`] failed; what it had made is removed again.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("removing leftovers of an earlier run first")]
    Leftovers(#[source] Box<DestroyError>),
    #[error("subnet {subnet} is already routed on this machine ({route})")]
    SubnetInUse { subnet: Cidr, route: String },
    #[error("interface {0} exists and does not belong to these test hosts")]
    LinkExists(String),
    #[error(transparent)]
    Ip(#[from] IpError),
    #[error("turning off forwarding on bridge {bridge} ({path})")]
    BridgeForwarding {
        bridge: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("turning on forwarding in {netns}")]
    HostForwarding {
        netns: String,
        #[source]
        source: IpError,
    },
}

/// Why [`destroy`] or [`leftovers`] failed (the first error; destroy goes on after one).
#[derive(Debug, thiserror::Error)]
pub enum DestroyError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("listing")]
    List(#[from] ListError),
    #[error(transparent)]
    Ip(#[from] IpError),
    #[error("killing process {pid} left in {netns}")]
    Kill {
        pid: i32,
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("processes {pids:?} still in {netns} after SIGKILL")]
    StillRunning { netns: String, pids: Vec<i32> },
    #[error("removing bridge")]
    Bridge(#[from] BridgeError),
    #[error("removing network namespace")]
    Netns(#[from] NetnsError),
}

/// One test host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestHost {
    /// 0-based position.
    pub index: usize,
    /// The host's network namespace: `berth-<key>-host<index>`.
    pub netns: String,
    /// `/var/run/netns/<netns>`: `nsenter --net=<this>` runs a process on the host.
    pub netns_path: PathBuf,
    /// The bridge port in the root namespace: `bh<key>h<index>`.
    pub root_veth: String,
    /// The host's interface towards the bridge ([`HOST_IFNAME`]).
    pub ifname: String,
    /// The host's link address with the link prefix, e.g. `10.214.7.10/24`.
    pub address: Cidr,
    /// The root bridge's address: where the server listens for agents.
    pub gateway: Ipv4Addr,
    /// The task subnet the host's agent gives its bridge and tasks.
    pub task_subnet: Cidr,
    /// The availability zone the host reports.
    pub zone: String,
}

impl TestHost {
    /// A command that runs `program` inside this host's network namespace with
    /// `nsenter --net` (not `ip netns exec`, which remounts `/sys` and so hides
    /// `/sys/fs/cgroup` from runc). Mount and PID namespaces stay the caller's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(NSENTER_BIN);
        cmd.arg(format!("--net={}", self.netns_path.display()))
            .arg("--")
            .arg(program);
        cmd
    }
}

/// The whole layout for one key (pure data; serialisable so a server can persist it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestHostsPlan {
    /// Carried by every name made.
    pub key: String,
    /// The bridge in the root namespace: `bh<key>`.
    pub bridge: String,
    /// The bridge's address with the link prefix (the link subnet's first host address).
    pub gateway: Cidr,
    /// The hosts, by index.
    pub hosts: Vec<TestHost>,
}

/// Checks a key: 1-[`MAX_KEY_LEN`] lowercase hex digits.
pub fn validate_key(key: &str) -> Result<(), PlanError> {
    let ok = (1..=MAX_KEY_LEN).contains(&key.len())
        && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some(())
        .ok_or_else(|| PlanError::BadKey { key: key.into() })
}

fn validate_zone(zone: &str) -> Result<(), PlanError> {
    let ok = (1..=64).contains(&zone.len())
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    ok.then_some(())
        .ok_or_else(|| PlanError::BadZone { zone: zone.into() })
}

/// The root-namespace bridge of a key.
pub fn bridge_name(key: &str) -> String {
    format!("bh{key}")
}

/// The root-side veth of host `index`.
pub fn root_veth_name(key: &str, index: usize) -> String {
    format!("bh{key}h{index}")
}

/// The network namespace of host `index`.
pub fn host_netns_name(key: &str, index: usize) -> String {
    format!("berth-{key}-host{index}")
}

fn is_index(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether interface `name` is this key's bridge or one of its root-side veths. Exact:
/// since keys are hex, `bh<key>` and `bh<key>h<digits>` are never another key's names.
pub fn owns_link(key: &str, name: &str) -> bool {
    name == bridge_name(key)
        || name
            .strip_prefix(&format!("bh{key}h"))
            .is_some_and(is_index)
}

/// Whether namespace `name` is one of this key's hosts.
pub fn owns_netns(key: &str, name: &str) -> bool {
    name.strip_prefix(&format!("berth-{key}-host"))
        .is_some_and(is_index)
}

/// A key's default slot (0..[`SLOTS`]): FNV-1a of the key, so a key keeps its addresses
/// from run to run.
pub fn slot_for_key(key: &str) -> u8 {
    let hash = key.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (hash % u32::from(SLOTS)) as u8
}

/// The default link subnet of a slot: `10.214.<slot>.0/24`.
pub fn default_link_subnet(slot: u8) -> Cidr {
    cidr(10, 214, slot, 0, 24)
}

/// The default task subnets of a slot: `10.215.<slot*8+i>.0/24` for host `i < count`.
pub fn default_task_subnets(slot: u8, count: usize) -> Vec<Cidr> {
    let base = usize::from(slot % SLOTS) * MAX_HOSTS;
    (0..count.min(MAX_HOSTS))
        .map(|i| cidr(10, 215, (base + i) as u8, 0, 24))
        .collect()
}

/// The first slot, starting at the key's own and wrapping around, whose default subnets
/// overlap none of `routed` (the destinations routed on the machine). Pure.
pub fn free_slot(key: &str, count: usize, routed: &[Cidr]) -> Option<u8> {
    let start = slot_for_key(key);
    (0..SLOTS).map(|k| (start + k) % SLOTS).find(|&slot| {
        let mut blocks = default_task_subnets(slot, count);
        blocks.push(default_link_subnet(slot));
        // A default route (/0) overlaps everything and does not count as "in use".
        blocks
            .iter()
            .all(|b| routed.iter().all(|r| r.prefix() == 0 || !r.overlaps(b)))
    })
}

fn check_private(subnet: Cidr) -> Result<(), PlanError> {
    const RFC1918: [Cidr; 3] = [
        cidr(10, 0, 0, 0, 8),
        cidr(172, 16, 0, 0, 12),
        cidr(192, 168, 0, 0, 16),
    ];
    let inside = |r: &Cidr| r.contains(subnet.network()) && r.contains(subnet.broadcast());
    if RFC1918.iter().any(inside) {
        Ok(())
    } else {
        Err(PlanError::NotPrivate { subnet })
    }
}

impl TestHostsPlan {
    /// The layout of `count` hosts under `key`: zones round-robin, host `i` on
    /// `link_subnet`'s address `.10+i`, with `task_subnets[i]`.
    pub fn new(
        key: &str,
        count: usize,
        zones: &[String],
        link_subnet: Cidr,
        task_subnets: Vec<Cidr>,
    ) -> Result<Self, PlanError> {
        validate_key(key)?;
        if !(1..=MAX_HOSTS).contains(&count) {
            return Err(PlanError::BadCount { count });
        }
        if zones.is_empty() {
            return Err(PlanError::NoZones);
        }
        zones.iter().try_for_each(|z| validate_zone(z))?;
        let link = link_subnet.block();
        let last = FIRST_HOST_ADDRESS + count as u32 - 1;
        let gateway = link
            .nth_host(1)
            .filter(|_| link.nth_host(last).is_some())
            .ok_or(PlanError::LinkSubnetTooSmall {
                subnet: link,
                count,
            })?;
        if task_subnets.len() != count {
            return Err(PlanError::TaskSubnetCount {
                expected: count,
                got: task_subnets.len(),
            });
        }
        let task_subnets: Vec<Cidr> = task_subnets.iter().map(Cidr::block).collect();
        if let Some(&subnet) = task_subnets.iter().find(|s| s.prefix() > MAX_SUBNET_PREFIX) {
            return Err(PlanError::TaskSubnetTooSmall { subnet });
        }
        let all: Vec<Cidr> = std::iter::once(link).chain(task_subnets.clone()).collect();
        all.iter().try_for_each(|&s| check_private(s))?;
        for (i, a) in all.iter().enumerate() {
            if let Some(b) = all[i + 1..].iter().find(|b| a.overlaps(b)) {
                return Err(PlanError::Overlap { a: *a, b: *b });
            }
        }
        let hosts = task_subnets
            .into_iter()
            .enumerate()
            .map(|(i, task_subnet)| {
                let addr = link
                    .nth_host(FIRST_HOST_ADDRESS + i as u32)
                    .expect("checked");
                TestHost {
                    index: i,
                    netns: host_netns_name(key, i),
                    netns_path: netns_path(&host_netns_name(key, i)),
                    root_veth: root_veth_name(key, i),
                    ifname: HOST_IFNAME.into(),
                    address: link.with_addr(addr).expect("inside"),
                    gateway,
                    task_subnet,
                    zone: zones[i % zones.len()].clone(),
                }
            })
            .collect();
        Ok(Self {
            key: key.into(),
            bridge: bridge_name(key),
            gateway: link.with_addr(gateway).expect("inside"),
            hosts,
        })
    }

    /// The layout in the default subnets of `slot` (see [`slot_for_key`], [`free_slot`]).
    pub fn in_slot(key: &str, count: usize, zones: &[String], slot: u8) -> Result<Self, PlanError> {
        Self::new(
            key,
            count,
            zones,
            default_link_subnet(slot),
            default_task_subnets(slot, count),
        )
    }

    /// The layout in the first slot from the key's own whose subnets are not routed in the
    /// caller's namespace yet (reads the routing table).
    pub fn with_free_subnets(
        key: &str,
        count: usize,
        zones: &[String],
    ) -> Result<Self, CreateOrPlanError> {
        validate_key(key)?;
        let routes = show_routes("all")?;
        let routed: Vec<Cidr> = route_destinations(&routes)
            .into_iter()
            .filter(|(_, line)| !route_device(line).is_some_and(|d| owns_link(key, d)))
            .map(|(c, _)| c)
            .collect();
        let slot = free_slot(key, count, &routed).ok_or(PlanError::NoFreeSlot { count })?;
        Ok(Self::in_slot(key, count, zones, slot)?)
    }

    /// The link subnet (network address and prefix).
    pub fn link_subnet(&self) -> Cidr {
        self.gateway.block()
    }

    /// Every block this layout routes: the link subnet, then the task subnets.
    pub fn subnets(&self) -> Vec<Cidr> {
        std::iter::once(self.link_subnet())
            .chain(self.hosts.iter().map(|h| h.task_subnet))
            .collect()
    }

    /// The script run in the root namespace first (pure): the host namespaces, the bridge
    /// with the gateway address, and per host a veth pair whose peer is made directly
    /// inside the host namespace as `eth0`, the root end on the bridge.
    pub fn root_plan(&self) -> Batch {
        let br = self.bridge.as_str();
        let mut cmds: Vec<Cmd> = self
            .hosts
            .iter()
            .map(|h| Cmd::new("add host namespace", &h.netns, &["netns", "add", &h.netns]))
            .collect();
        // The bridge is new (create removed leftovers first): `link add` is included.
        cmds.extend(bridge_plan(br, self.gateway, None).cmds);
        for h in &self.hosts {
            let rv = h.root_veth.as_str();
            cmds.push(Cmd::new(
                "add host veth pair",
                rv,
                &[
                    "link",
                    "add",
                    "name",
                    rv,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    HOST_IFNAME,
                    "netns",
                    &h.netns,
                ],
            ));
            cmds.push(Cmd::new(
                "attach host veth to bridge",
                rv,
                &["link", "set", "dev", rv, "master", br, "up"],
            ));
        }
        Batch { netns: None, cmds }
    }

    /// The script run inside host `index`'s namespace (pure): loopback, the link address,
    /// `eth0` up, and a route to every other host's task subnet via that host's link
    /// address. No default route: the host reaches the link subnet and berth's task
    /// subnets, nothing else.
    pub fn host_plan(&self, index: usize) -> Batch {
        let h = &self.hosts[index];
        let addr = h.address.to_string();
        let mut cmds = addressed_and_up(
            ["set host link address", "bring up host interface"],
            &addr,
            HOST_IFNAME,
        );
        cmds.extend(
            self.hosts
                .iter()
                .filter(|o| o.index != index)
                .map(|o| route_to_tasks("route to another host's tasks", o, HOST_IFNAME)),
        );
        Batch {
            netns: Some(h.netns.clone()),
            cmds,
        }
    }

    /// The script run in the root namespace last (pure): each host's task subnet via its
    /// link address — the only routes added outside the host namespaces, and only to
    /// berth's own subnets.
    pub fn routes_plan(&self) -> Batch {
        let cmds = self
            .hosts
            .iter()
            .map(|h| route_to_tasks("route to a host's tasks", h, &self.bridge))
            .collect();
        Batch { netns: None, cmds }
    }
}

/// `route add <host's task subnet> via <host's link address> dev <dev>` (pure).
fn route_to_tasks(step: &'static str, host: &TestHost, dev: &str) -> Cmd {
    Cmd::new(
        step,
        &host.netns,
        &[
            "route",
            "add",
            &host.task_subnet.to_string(),
            "via",
            &host.address.addr().to_string(),
            "dev",
            dev,
        ],
    )
}

/// Either a layout error or an `ip` failure while reading routes.
#[derive(Debug, thiserror::Error)]
pub enum CreateOrPlanError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Ip(#[from] IpError),
}

/// Test hosts that exist (returned by [`create`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestHosts {
    /// The layout that was made.
    pub plan: TestHostsPlan,
}

impl TestHosts {
    /// The hosts, by index.
    pub fn hosts(&self) -> &[TestHost] {
        &self.plan.hosts
    }

    /// The root bridge's address: where the server listens for the hosts' agents.
    pub fn gateway(&self) -> Ipv4Addr {
        self.plan.gateway.addr()
    }

    /// Removes them ([`destroy`] with their key).
    pub fn destroy(&self) -> Result<(), DestroyError> {
        destroy(&self.plan.key)
    }
}

/// Makes the test hosts of `plan`. Leftovers of an earlier run with the same key (a crash)
/// are removed first; subnets already routed on the machine are refused; on any failure
/// everything with the key is removed again.
pub fn create(plan: &TestHostsPlan) -> Result<TestHosts, CreateError> {
    destroy(&plan.key).map_err(|e| CreateError::Leftovers(Box::new(e)))?;
    let result = check_free(plan).and_then(|()| make(plan));
    if let Err(e) = &result {
        if let Err(undo) = destroy(&plan.key) {
            tracing::warn!(key = %plan.key, error = %undo, "could not undo half-made test hosts");
        }
        tracing::debug!(key = %plan.key, error = %e, "creating test hosts failed");
    }
    result.map(|()| TestHosts { plan: plan.clone() })
}

fn check_free(plan: &TestHostsPlan) -> Result<(), CreateError> {
    let routes = show_routes("all")?;
    for (dst, line) in route_destinations(&routes) {
        if dst.prefix() == 0 {
            continue;
        }
        if let Some(subnet) = plan.subnets().into_iter().find(|s| s.overlaps(&dst)) {
            return Err(CreateError::SubnetInUse {
                subnet,
                route: line.to_owned(),
            });
        }
    }
    let names = std::iter::once(&plan.bridge).chain(plan.hosts.iter().map(|h| &h.root_veth));
    if let Some(name) = names.into_iter().find(|n| link_exists(n)) {
        return Err(CreateError::LinkExists(name.clone()));
    }
    Ok(())
}

fn make(plan: &TestHostsPlan) -> Result<(), CreateError> {
    plan.root_plan().run().map_err(|f| f.error)?;
    let path = forwarding_sysctl(&plan.bridge);
    std::fs::write(&path, "0").map_err(|source| CreateError::BridgeForwarding {
        bridge: plan.bridge.clone(),
        path,
        source,
    })?;
    for h in &plan.hosts {
        plan.host_plan(h.index).run().map_err(|f| f.error)?;
        let mut args = vec!["netns", "exec", &h.netns, SYSCTL_BIN, "-q", "-w"];
        args.extend(HOST_SYSCTLS);
        ip::run("turn on forwarding", &h.netns, &args).map_err(|source| {
            CreateError::HostForwarding {
                netns: h.netns.clone(),
                source,
            }
        })?;
    }
    plan.routes_plan().run().map_err(|f| f.error)?;
    tracing::debug!(key = %plan.key, hosts = plan.hosts.len(), link = %plan.link_subnet(), "test hosts ready");
    Ok(())
}

/// What exists with a key's names: host namespaces, root-side interfaces, routes through
/// them. All empty after [`destroy`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub netns: Vec<String>,
    pub links: Vec<String>,
    pub routes: Vec<String>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.netns.is_empty() && self.links.is_empty() && self.routes.is_empty()
    }
}

/// Lists what exists with `key`'s names in the caller's namespace (see [`owns_link`],
/// [`owns_netns`]).
pub fn leftovers(key: &str) -> Result<Leftovers, DestroyError> {
    validate_key(key)?;
    let netns = list_netns_with_prefix(&format!("berth-{key}-host"))?
        .into_iter()
        .filter(|n| owns_netns(key, n))
        .collect();
    let links = list_links_with_prefix(&format!("bh{key}"))?
        .into_iter()
        .filter(|n| owns_link(key, n))
        .collect();
    let routes = show_routes("all")?
        .lines()
        .filter(|l| route_device(l).is_some_and(|d| owns_link(key, d)))
        .map(|l| l.trim().to_owned())
        .collect();
    Ok(Leftovers {
        netns,
        links,
        routes,
    })
}

/// Removes everything with `key`'s names: kills the processes still in each host
/// namespace (SIGKILL; the server should have stopped its agents first), deletes the
/// root-side veths (their `eth0` peers go with them), the bridge (the kernel removes the
/// routes through it) and the namespaces. Safe to call twice; names of other keys, and
/// interfaces of this key's names that are not what berth makes, are never touched.
///
/// Task namespaces the hosts' agents made are theirs to remove (`berth down` per host):
/// their veths to a host's bridge vanish with the host namespace, the namespace mounts stay.
pub fn destroy(key: &str) -> Result<(), DestroyError> {
    let found = leftovers(key)?;
    let mut first: Option<DestroyError> = None;
    let mut keep = |r: Result<(), DestroyError>| {
        if let Err(e) = r {
            tracing::warn!(key, error = %e, "removing test hosts");
            first.get_or_insert(e);
        }
    };
    for ns in &found.netns {
        keep(kill_all_in(ns));
    }
    let bridge = bridge_name(key);
    for link in found.links.iter().filter(|l| **l != bridge) {
        keep(delete_veth(link));
    }
    keep(remove_bridge(&bridge).map_err(Into::into));
    for ns in &found.netns {
        keep(delete_netns(ns));
    }
    first.map_or(Ok(()), Err)
}

/// Process ids from `ip netns pids` output (pure).
pub fn parse_pids(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Kills (SIGKILL) every process in the network namespace `ns` and waits for them to go.
pub fn kill_all_in(ns: &str) -> Result<(), DestroyError> {
    let pids = || -> Result<Vec<i32>, DestroyError> {
        Ok(parse_pids(&ip::run(
            "list processes",
            ns,
            &["netns", "pids", ns],
        )?))
    };
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let left = pids()?;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DestroyError::StillRunning {
                netns: ns.into(),
                pids: left,
            });
        }
        for pid in left {
            let Some(p) = rustix::process::Pid::from_raw(pid) else {
                continue;
            };
            match rustix::process::kill_process(p, rustix::process::Signal::KILL) {
                Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                Err(e) => {
                    return Err(DestroyError::Kill {
                        pid,
                        netns: ns.into(),
                        source: e.into(),
                    })
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn delete_veth(link: &str) -> Result<(), DestroyError> {
    match is_veth(link) {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(link, "not a veth; leaving it alone");
            return Ok(());
        }
        Err(_) if !link_exists(link) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    match ip::run("delete host veth", link, &["link", "del", "dev", link]) {
        Err(e) if link_exists(link) => Err(e.into()),
        _ => Ok(()),
    }
}

fn delete_netns(ns: &str) -> Result<(), DestroyError> {
    match ip::run("delete host namespace", ns, &["netns", "del", ns]) {
        Err(e) if netns_exists(ns) => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
