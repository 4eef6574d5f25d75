//! Host port mappings of `bridge`-mode tasks (pure): the mapping type, its one-line text
//! form (what the agent passes to the per-mapping proxy process) and the choice of a
//! dynamic host port.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// ECS's default dynamic host port range on Linux, used when the kernel's
/// `ip_local_port_range` cannot be read (ECS API reference, `PortMapping.hostPort`:
/// "the default ephemeral port range from 49153 through 65535 (Linux) is used").
pub const DYNAMIC_PORT_RANGE: RangeInclusive<u16> = 49153..=65535;

/// Transport protocol of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One host port forwarded to a port of a task.
///
/// Text form: `HOST_IP:HOST_PORT:CONTAINER_IP:CONTAINER_PORT/PROTO`, e.g.
/// `0.0.0.0:8080:10.213.9.2:80/tcp` or `[::]:8080:10.213.9.2:80/udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// Host address to listen on; unspecified (`0.0.0.0`, `::`) means every address.
    pub host_ip: IpAddr,
    /// Host port, 1-65535 (0 must be resolved with [`choose_dynamic_port`] first).
    pub host_port: u16,
    /// The task's address on the node bridge.
    pub container_ip: Ipv4Addr,
    /// The port inside the task, 1-65535.
    pub container_port: u16,
    pub protocol: Protocol,
}

/// Why a mapping is malformed or invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortMappingError {
    #[error("port mapping {0:?} is not HOST_IP:HOST_PORT:CONTAINER_IP:CONTAINER_PORT/PROTO")]
    Syntax(String),
    #[error("unknown protocol {0:?} (tcp or udp)")]
    Protocol(String),
    #[error("invalid address {0:?}")]
    Address(String),
    #[error("invalid port {0:?} (1-65535)")]
    Port(String),
    #[error("host address {0} cannot be listened on")]
    HostIp(IpAddr),
    #[error("container address {0} is not a unicast address")]
    ContainerIp(Ipv4Addr),
}

impl PortMapping {
    /// Checks ports and addresses of a mapping built in code.
    pub fn validate(&self) -> Result<(), PortMappingError> {
        if self.host_port == 0 {
            return Err(PortMappingError::Port("0".into()));
        }
        if self.container_port == 0 {
            return Err(PortMappingError::Port("0".into()));
        }
        let host_bad = match self.host_ip {
            IpAddr::V4(ip) => ip.is_multicast() || ip.is_broadcast(),
            IpAddr::V6(ip) => ip.is_multicast(),
        };
        if host_bad {
            return Err(PortMappingError::HostIp(self.host_ip));
        }
        let c = self.container_ip;
        if c.is_unspecified() || c.is_multicast() || c.is_broadcast() {
            return Err(PortMappingError::ContainerIp(c));
        }
        Ok(())
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            IpAddr::V4(ip) => write!(f, "{ip}")?,
            IpAddr::V6(ip) => write!(f, "[{ip}]")?,
        }
        write!(
            f,
            ":{}:{}:{}/{}",
            self.host_port, self.container_ip, self.container_port, self.protocol
        )
    }
}

fn parse_port(s: &str) -> Result<u16, PortMappingError> {
    let bad = || PortMappingError::Port(s.to_owned());
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(bad());
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(p) => Ok(p),
    }
}

impl FromStr for PortMapping {
    type Err = PortMappingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PortMappingError::Syntax(s.to_owned());
        let (rest, proto) = s.rsplit_once('/').ok_or_else(syntax)?;
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(PortMappingError::Protocol(other.to_owned())),
        };
        let (host_ip, rest) = if let Some(v6) = rest.strip_prefix('[') {
            let (ip, rest) = v6.split_once("]:").ok_or_else(syntax)?;
            let ip: std::net::Ipv6Addr = ip
                .parse()
                .map_err(|_| PortMappingError::Address(ip.to_owned()))?;
            (IpAddr::V6(ip), rest)
        } else {
            let (ip, rest) = rest.split_once(':').ok_or_else(syntax)?;
            let ip: Ipv4Addr = ip
                .parse()
                .map_err(|_| PortMappingError::Address(ip.to_owned()))?;
            (IpAddr::V4(ip), rest)
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let [host_port, container_ip, container_port] = parts[..] else {
            return Err(syntax());
        };
        let mapping = PortMapping {
            host_ip,
            host_port: parse_port(host_port)?,
            container_ip: container_ip
                .parse()
                .map_err(|_| PortMappingError::Address(container_ip.to_owned()))?,
            container_port: parse_port(container_port)?,
            protocol,
        };
        mapping.validate()?;
        Ok(mapping)
    }
}

/// The lowest port of `range` not in `in_use`, or `None` if all are taken.
///
/// `in_use` is what the agent knows it handed out; another process may still hold the
/// chosen port, so the caller binds it and, on `EADDRINUSE`, adds it to `in_use` and asks
/// again.
pub fn choose_dynamic_port(in_use: &BTreeSet<u16>, range: RangeInclusive<u16>) -> Option<u16> {
    range.into_iter().find(|p| !in_use.contains(p))
}

/// Parses `/proc/sys/net/ipv4/ip_local_port_range` ("32768\t60999\n"), which ECS prefers
/// over [`DYNAMIC_PORT_RANGE`] when present.
pub fn parse_ip_local_port_range(s: &str) -> Option<RangeInclusive<u16>> {
    let mut it = s.split_whitespace();
    let lo: u16 = it.next()?.parse().ok()?;
    let hi: u16 = it.next()?.parse().ok()?;
    (it.next().is_none() && lo >= 1 && lo <= hi).then_some(lo..=hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Canonical strings parse and print back unchanged, IPv6 host addresses in brackets.
    #[test]
    fn round_trip() {
        for s in [
            "0.0.0.0:8080:10.213.9.2:80/tcp",
            "127.0.0.1:1:10.213.9.2:65535/udp",
            "[::]:49153:10.213.9.2:53/udp",
            "[::1]:8080:10.213.9.2:80/tcp",
        ] {
            let m: PortMapping = s.parse().unwrap();
            assert_eq!(m.to_string(), s);
        }
        let m: PortMapping = "0.0.0.0:8080:10.213.9.2:80/tcp".parse().unwrap();
        assert_eq!(
            m,
            PortMapping {
                host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                host_port: 8080,
                container_ip: Ipv4Addr::new(10, 213, 9, 2),
                container_port: 80,
                protocol: Protocol::Tcp,
            }
        );
    }

    /// Each kind of malformed or invalid mapping gets its own error.
    #[test]
    fn rejects() {
        use PortMappingError as E;
        let cases = [
            (
                "0.0.0.0:8080:10.213.9.2:80",
                E::Syntax("0.0.0.0:8080:10.213.9.2:80".into()),
            ),
            (
                "0.0.0.0:8080:10.213.9.2:80/sctp",
                E::Protocol("sctp".into()),
            ),
            ("0.0.0.0:8080:10.213.9.2:80/TCP", E::Protocol("TCP".into())),
            (
                "0.0.0.0:8080:80/tcp",
                E::Syntax("0.0.0.0:8080:80/tcp".into()),
            ),
            (
                "0.0.0.0:8080:10.213.9.2:80:1/tcp",
                E::Syntax("0.0.0.0:8080:10.213.9.2:80:1/tcp".into()),
            ),
            ("::1:8080:10.213.9.2:80/tcp", E::Address("".into())),
            (
                "[::1:8080:10.213.9.2:80/tcp",
                E::Syntax("[::1:8080:10.213.9.2:80/tcp".into()),
            ),
            (
                "300.0.0.0:8080:10.213.9.2:80/tcp",
                E::Address("300.0.0.0".into()),
            ),
            (
                "0.0.0.0:8080:fd00::1:80/tcp",
                E::Syntax("0.0.0.0:8080:fd00::1:80/tcp".into()),
            ),
            ("0.0.0.0:0:10.213.9.2:80/tcp", E::Port("0".into())),
            ("0.0.0.0:65536:10.213.9.2:80/tcp", E::Port("65536".into())),
            ("0.0.0.0:080:10.213.9.2:80/tcp", E::Port("080".into())),
            ("0.0.0.0:+80:10.213.9.2:80/tcp", E::Port("+80".into())),
            ("0.0.0.0:80:10.213.9.2:/tcp", E::Port("".into())),
            (
                "224.0.0.1:80:10.213.9.2:80/tcp",
                E::HostIp("224.0.0.1".parse().unwrap()),
            ),
            (
                "0.0.0.0:80:0.0.0.0:80/tcp",
                E::ContainerIp(Ipv4Addr::UNSPECIFIED),
            ),
            (
                "0.0.0.0:80:255.255.255.255:80/tcp",
                E::ContainerIp(Ipv4Addr::BROADCAST),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<PortMapping>(), Err(want), "{s}");
        }
    }

    /// The lowest free port wins; a full range yields None.
    #[test]
    fn dynamic_ports() {
        assert_eq!(
            choose_dynamic_port(&BTreeSet::new(), DYNAMIC_PORT_RANGE),
            Some(49153)
        );
        let used: BTreeSet<u16> = [49153, 49154, 49156].into();
        assert_eq!(choose_dynamic_port(&used, DYNAMIC_PORT_RANGE), Some(49155));
        let all: BTreeSet<u16> = (65530..=65535).collect();
        assert_eq!(choose_dynamic_port(&all, 65530..=65535), None);
        assert_eq!(
            choose_dynamic_port(&BTreeSet::new(), 65535..=65535),
            Some(65535)
        );
    }

    /// The kernel's range file parses; junk does not.
    #[test]
    fn local_port_range() {
        assert_eq!(
            parse_ip_local_port_range("32768\t60999\n"),
            Some(32768..=60999)
        );
        for bad in ["", "1", "2 1", "0 10", "1 2 3", "a b", "1 70000"] {
            assert_eq!(parse_ip_local_port_range(bad), None, "{bad:?}");
        }
    }

    /// Serde uses named fields and lowercase protocols.
    #[test]
    fn serde_shape() {
        let m: PortMapping = "0.0.0.0:8080:10.213.9.2:80/udp".parse().unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"host_ip":"0.0.0.0","host_port":8080,"container_ip":"10.213.9.2","container_port":80,"protocol":"udp"}"#
        );
        assert_eq!(serde_json::from_str::<PortMapping>(&json).unwrap(), m);
    }

    proptest! {
        /// Parsing never panics; whatever parses is valid and prints back to the input.
        #[test]
        fn parse_never_panics(s in "[0-9a-f:.\\[\\]/tcpu]{0,40}") {
            if let Ok(m) = s.parse::<PortMapping>() {
                prop_assert!(m.validate().is_ok());
                prop_assert_eq!(m.to_string(), s);
            }
        }

        /// Every valid mapping round-trips through its text form.
        #[test]
        fn display_parse(h in any::<[u8; 4]>(), hp in 1u16.., c in any::<[u8; 4]>(), cp in 1u16.., udp in any::<bool>()) {
            let m = PortMapping {
                host_ip: IpAddr::from(h),
                host_port: hp,
                container_ip: Ipv4Addr::from(c),
                container_port: cp,
                protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
            };
            if m.validate().is_ok() {
                prop_assert_eq!(m.to_string().parse::<PortMapping>(), Ok(m));
            }
        }

        /// The chosen port is in range, free, and no lower free port exists.
        #[test]
        fn chosen_port_is_lowest_free(used in proptest::collection::btree_set(60000u16..60040, 0..40), lo in 60000u16..60020) {
            let range = lo..=60039;
            match choose_dynamic_port(&used, range.clone()) {
                Some(p) => {
                    prop_assert!(range.contains(&p) && !used.contains(&p));
                    prop_assert!((lo..p).all(|q| used.contains(&q)));
                }
                None => prop_assert!(range.clone().all(|q| used.contains(&q))),
            }
        }
    }
}
