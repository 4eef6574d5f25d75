//! Host networking for berth tasks; only the agent calls it.
//!
//! The node layout (docs/net.md): one Linux bridge per node holding the gateway address
//! of the task subnet; each task in a named network namespace with a veth pair, the host
//! end on the bridge and the other end as the task's `eth0`; host port mappings served by
//! a userland proxy process per mapping instead of NAT rules.
//!
//! [`testhosts`] makes N "test hosts" on one machine for a multi-host berth: network
//! namespaces joined by a bridge, one agent in each (the server starts them).
//!
//! Boundary: this crate makes and removes bridges, namespaces and veths, allocates
//! addresses, renders `/etc/hosts` and `/etc/resolv.conf`, and forwards mapped ports. It
//! adds no NAT or firewall rule and never changes the machine's default route; the only
//! routes it adds are a task's default route inside the task's namespace and, for test
//! hosts, routes to berth's own subnets (no default route in a host namespace): all
//! traffic stays on the machine. Which task gets which address and port, persistence and
//! crash clean-up policy are the agent's; how many test hosts and when, the server's.
//!
//! Every query answers for the caller's network namespace (procfs and `ip`, never
//! `/sys/class/net`), so the agent works the same inside a test host entered with
//! `nsenter --net`.
//!
//! Pure modules: [`ipam`], [`names`], [`hosts`], [`resolv`], [`portmap`], the parsers in
//! [`links`] and [`routes`], and the plans in [`bridge`], [`netns`] and [`testhosts`].
//! Blocking I/O: [`bridge`], [`netns`], [`links`], [`routes`], [`testhosts`] (via [`ip`]).
//! Async I/O: [`proxy`].

#![forbid(unsafe_code)]

pub mod bridge;
pub mod hosts;
pub mod ip;
pub mod ipam;
pub mod links;
pub mod names;
pub mod netns;
pub mod portmap;
pub mod proxy;
pub mod resolv;
pub mod routes;
pub mod testhosts;

pub use bridge::{ensure_bridge, ensure_bridge_with, remove_bridge, BridgeConfig, BridgeError};
pub use hosts::{render_hosts, ExtraHost, HostsSpec};
pub use ipam::{Cidr, CidrError, Ipam, IpamError};
pub use links::list_links_with_prefix;
pub use netns::{
    create_isolated_netns, create_task_netns, destroy_task_netns, list_netns_with_prefix,
    NetnsError, TaskNet, TaskNetSpec,
};
pub use portmap::{choose_dynamic_port, PortMapping, Protocol, DYNAMIC_PORT_RANGE};
pub use proxy::{run_tcp_proxy, run_udp_proxy};
pub use resolv::{render_resolv_conf, ResolvSpec};
pub use testhosts::{TestHost, TestHosts, TestHostsPlan};
