//! Host networking for berth tasks; only the agent calls it.
//!
//! The node layout (docs/net.md): one Linux bridge per node holding the gateway address
//! of the task subnet; each task in a named network namespace with a veth pair, the host
//! end on the bridge and the other end as the task's `eth0`; host port mappings served by
//! a userland proxy process per mapping instead of NAT rules.
//!
//! Boundary: this crate makes and removes bridges, namespaces and veths, allocates
//! addresses, renders `/etc/hosts` and `/etc/resolv.conf`, and forwards mapped ports. It
//! never adds routes outside a task's namespace, NAT or firewall rules, and never changes
//! the host's default route: all task traffic stays on the machine. Which task gets
//! which address and port, persistence and crash clean-up policy are the agent's.
//!
//! Pure modules: [`ipam`], [`names`], [`hosts`], [`resolv`], [`portmap`] and the plans in
//! [`bridge`] and [`netns`]. Blocking I/O: [`bridge`], [`netns`], [`links`] (via [`ip`]).
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
