//! Read-only questions about interfaces in the caller's network namespace, plus the
//! listing the agent uses to find leftovers after a crash.
//!
//! Why procfs and not sysfs: `/sys/class/net` shows the interfaces of the namespace sysfs
//! was *mounted* in, not the caller's (sysfs-class-net; a mount is tagged with the network
//! namespace of the mounter). An agent started in a test host's namespace with
//! `nsenter --net=/run/netns/<host>` keeps the root's `/sys` mount (it must: `ip netns exec`
//! would remount `/sys` and lose `/sys/fs/cgroup`, which runc needs) and would see the
//! root's interfaces there. `/proc/thread-self/net/dev` follows the calling thread's
//! network namespace (proc(5), `/proc/pid/net`), as do `ip` child processes, which inherit
//! it. `thread-self` rather than `self`: `/proc/self/net` is the main thread's namespace,
//! and `/proc/sys/net` (written by [`crate::bridge`]) is the calling thread's.

use std::io;
use std::path::{Path, PathBuf};

use crate::ip;

/// The interface list of the calling thread's network namespace (proc(5)).
pub const PROC_NET_DEV: &str = "/proc/thread-self/net/dev";

/// Why a listing failed.
#[derive(Debug, thiserror::Error)]
#[error("reading {path}")]
pub struct ListError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Interface names from the text of `/proc/net/dev` (pure), in file order.
///
/// The file has two header lines (they contain `|`), then one line per interface:
/// `  <name>: <16 counters>`. Interface names cannot contain `:` or whitespace
/// (`dev_valid_name` in net/core/dev.c), so the name is everything before the first `:`.
pub fn parse_net_dev(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.contains('|'))
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Names of all interfaces in the caller's network namespace, in kernel order.
pub fn link_names() -> Result<Vec<String>, ListError> {
    std::fs::read_to_string(PROC_NET_DEV)
        .map(|text| parse_net_dev(&text))
        .map_err(|source| ListError {
            path: PROC_NET_DEV.into(),
            source,
        })
}

/// Whether an interface with this (validated) name exists in the caller's namespace.
/// An unreadable interface list counts as "no".
pub fn link_exists(name: &str) -> bool {
    link_names().is_ok_and(|names| names.iter().any(|n| n == name))
}

/// Whether `ip -d -o link show` output names the link kind `kind` (pure). The kind is a
/// word of its own in the details (`... bridge forward_delay 1500 ...`, `... veth ...`);
/// a bridge port shows `bridge_slave`, which is a different word.
pub fn details_show_kind(details: &str, kind: &str) -> bool {
    details.split_whitespace().any(|w| w == kind)
}

fn link_kind_is(name: &str, kind: &str) -> Result<bool, ip::IpError> {
    let out = ip::run(
        "inspect interface",
        name,
        &["-d", "-o", "link", "show", "dev", name],
    )?;
    Ok(details_show_kind(&out, kind))
}

/// Whether the interface is a Linux bridge in the caller's namespace (asked of `ip -d`,
/// which runs in the caller's namespace; a missing interface is not a bridge).
pub fn is_bridge(name: &str) -> bool {
    link_exists(name) && link_kind_is(name, "bridge").unwrap_or(false)
}

/// The link-layer address in `ip -o link show` output (`link/ether 02:42:..`), pure.
pub fn parse_link_mac(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == "link/ether")?;
    words.next().map(String::from)
}

/// The interface's MAC address in the caller's namespace (asked of `ip`).
pub fn link_mac(name: &str) -> Result<Option<String>, ip::IpError> {
    let out = ip::run(
        "inspect interface",
        name,
        &["-o", "link", "show", "dev", name],
    )?;
    Ok(parse_link_mac(&out))
}

/// Whether the interface is a veth (asked of `ip -d`).
pub fn is_veth(name: &str) -> Result<bool, ip::IpError> {
    link_kind_is(name, "veth")
}

/// Names, sorted, of the entries of `dir` starting with `prefix`; a missing `dir` is empty.
pub(crate) fn list_dir_with_prefix(dir: &Path, prefix: &str) -> Result<Vec<String>, ListError> {
    let err = |source| ListError {
        path: dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(err)?;
        if let Some(name) = entry.file_name().to_str() {
            if name.starts_with(prefix) {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Interfaces of the caller's namespace whose names start with `prefix`, sorted (for
/// removing veths and bridges left behind by a crash).
pub fn list_links_with_prefix(prefix: &str) -> Result<Vec<String>, ListError> {
    let mut names: Vec<String> = link_names()?
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The MAC is the word after `link/ether`; a link without one (loopback) has none.
    #[test]
    fn parses_link_mac() {
        let br = "7: bt0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 02:5a:10:3c:9e:01 brd ff:ff:ff:ff:ff:ff";
        assert_eq!(parse_link_mac(br).as_deref(), Some("02:5a:10:3c:9e:01"));
        let lo = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00";
        assert_eq!(parse_link_mac(lo), None);
    }

    /// A real `/proc/net/dev` (kernel 6.x): headers skipped, names trimmed, order kept.
    #[test]
    fn parses_net_dev() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:   10340     120    0    0    0     0          0         0    10340     120    0    0    0     0       0          0
  eth0: 1234567    9876    0    0    0     0          0         0   765432    5432    0    0    0     0       0          0
bt0a1b2c3d:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
bv-0123456789ab:0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
";
        assert_eq!(
            parse_net_dev(text),
            ["lo", "eth0", "bt0a1b2c3d", "bv-0123456789ab"]
        );
        assert!(parse_net_dev("").is_empty());
        assert!(parse_net_dev("Inter-|\n face |\n").is_empty());
    }

    /// The kind is matched as a whole word: a bridge port is not a bridge.
    #[test]
    fn kind_is_a_whole_word() {
        let bridge = "7: bt0: <BROADCAST> mtu 1500 ... promiscuity 0 allmulti 0 minmtu 68 \
                      maxmtu 65535 \\    bridge forward_delay 1500 hello_time 200";
        let port = "8: vb1@if2: <BROADCAST> mtu 1500 master bt0 ... \\    veth \\    \
                    bridge_slave state forwarding priority 32";
        assert!(details_show_kind(bridge, "bridge"));
        assert!(!details_show_kind(port, "bridge"));
        assert!(details_show_kind(port, "veth"));
        assert!(!details_show_kind(bridge, "veth"));
    }

    proptest! {
        /// Any list of valid names written in the file's format is read back exactly.
        #[test]
        fn net_dev_round_trip(names in proptest::collection::vec("[a-zA-Z0-9_.][a-zA-Z0-9_.-]{0,14}", 0..20)) {
            let mut text = String::from("Inter-|   Receive |  Transmit\n face |bytes |bytes\n");
            for n in &names {
                text.push_str(&format!("{n:>6}: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"));
            }
            prop_assert_eq!(parse_net_dev(&text), names);
        }
    }
}
