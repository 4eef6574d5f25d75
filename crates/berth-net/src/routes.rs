//! Reading the caller's IPv4 routing tables: which destinations have routes, and whether
//! there is a default route (the guard before turning forwarding on).
//!
//! Parsers pure; [`show_routes`] runs `ip`, which answers for the caller's network
//! namespace (a child process inherits it).

use std::net::Ipv4Addr;

use crate::ip::{self, IpError};
use crate::ipam::Cidr;

/// Route types `ip route` may print before the destination (ip-route(8), TYPE) that can
/// carry a packet somewhere.
const LIVE_TYPES: [&str; 7] = [
    "unicast",
    "local",
    "broadcast",
    "multicast",
    "anycast",
    "throw",
    "nat",
];
/// Route types that drop the packet: they send nothing anywhere.
const DEAD_TYPES: [&str; 3] = ["blackhole", "unreachable", "prohibit"];

/// The destination of one line of `ip -4 -o route show` (pure): `default`, a prefix
/// `a.b.c.d/p` or a host `a.b.c.d`, after an optional live route type. `None` for empty
/// lines and for blackhole, unreachable and prohibit routes.
pub fn route_destination(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    let first = words.next()?;
    if DEAD_TYPES.contains(&first) {
        return None;
    }
    if LIVE_TYPES.contains(&first) {
        return words.next();
    }
    Some(first)
}

/// The first default route (`default` or `0.0.0.0/0`) in `ip -4 -o route show` output.
pub fn find_default_route(routes: &str) -> Option<&str> {
    routes
        .lines()
        .map(str::trim)
        .find(|line| matches!(route_destination(line), Some("default" | "0.0.0.0/0")))
}

/// The destination blocks of the routes in `ip -4 -o route show` output, with their lines
/// (a host destination is a /32; `default` is 0.0.0.0/0).
pub fn route_destinations(routes: &str) -> Vec<(Cidr, &str)> {
    routes
        .lines()
        .map(str::trim)
        .filter_map(|line| {
            let dst = route_destination(line)?;
            let cidr = match dst {
                "default" => Cidr::new(Ipv4Addr::UNSPECIFIED, 0),
                d if d.contains('/') => d.parse().ok(),
                d => Cidr::new(d.parse().ok()?, 32),
            }?;
            Some((cidr, line))
        })
        .collect()
}

/// The device a route line sends through (`... dev NAME ...`), if it names one.
pub fn route_device(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "dev")?;
    words.next()
}

/// `ip -4 -o route show table TABLE` in the caller's namespace.
pub fn show_routes(table: &str) -> Result<String, IpError> {
    ip::run(
        "list routes",
        table,
        &["-4", "-o", "route", "show", "table", table],
    )
}

/// The caller's namespace's IPv4 default route in any table, if it has one.
pub fn default_route() -> Result<Option<String>, IpError> {
    Ok(find_default_route(&show_routes("all")?).map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Default routes are found in any table and with a route type; dead ends and other
    /// destinations are not default routes.
    #[test]
    fn finds_default_route() {
        let root = "default via 192.0.2.1 dev eth0 \n\
                    192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2 \n\
                    local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1 \n";
        assert_eq!(
            find_default_route(root),
            Some("default via 192.0.2.1 dev eth0")
        );
        let host = "10.214.7.0/24 dev eth0 proto kernel scope link src 10.214.7.10 \n\
                    10.215.57.0/24 via 10.214.7.11 dev eth0 \n\
                    local 10.214.7.10 dev eth0 table local proto kernel scope host src 10.214.7.10 \n";
        assert_eq!(find_default_route(host), None);
        assert_eq!(find_default_route(""), None);
        assert!(find_default_route("unicast default via 10.0.0.1 dev x table 100").is_some());
        assert!(find_default_route("0.0.0.0/0 via 10.0.0.1 dev x").is_some());
        assert_eq!(find_default_route("blackhole default"), None);
        assert_eq!(find_default_route("unreachable default table 7"), None);
        assert_eq!(find_default_route("10.0.0.0/8 dev x # default"), None);
    }

    /// Destinations become blocks (hosts /32, default /0); devices are read after `dev`.
    #[test]
    fn destinations_and_devices() {
        let text = "default via 192.0.2.1 dev eth0 \n\
                    10.215.57.0/24 via 10.214.7.11 dev bh0a1b \n\
                    local 10.214.7.1 dev bh0a1b table local proto kernel scope host \n\
                    blackhole 10.9.0.0/16 \n";
        let got = route_destinations(text);
        let blocks: Vec<String> = got.iter().map(|(c, _)| c.to_string()).collect();
        assert_eq!(blocks, ["0.0.0.0/0", "10.215.57.0/24", "10.214.7.1/32"]);
        assert_eq!(route_device(got[1].1), Some("bh0a1b"));
        assert_eq!(route_device("blackhole 10.9.0.0/16"), None);
        assert_eq!(route_device("10.0.0.0/8 dev"), None);
    }
}
