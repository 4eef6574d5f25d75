//! `/etc/hosts` content for a task (pure).
//!
//! The same lines Docker writes for a bridge-network container: loopback names for IPv4 and
//! IPv6, the task's hostname on its own address, then the task definition's `extraHosts`.
//! Every name is checked so that no input can add a line or a comment.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// Longest hostname (`HOST_NAME_MAX` on Linux, gethostname(2)).
pub const MAX_HOSTNAME_LEN: usize = 64;
/// Longest name in an `extraHosts` entry (RFC 1035 §2.3.4 less the trailing dot).
pub const MAX_HOST_ALIAS_LEN: usize = 253;

/// An `extraHosts` entry: a name and the address it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraHost {
    pub hostname: String,
    pub ip: IpAddr,
}

/// What goes into a task's `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsSpec {
    /// The task's hostname (a single name, no spaces).
    pub hostname: String,
    /// The task's address; `None` (network mode `none`) maps the hostname to 127.0.0.1.
    pub address: Option<Ipv4Addr>,
    /// Extra `name → address` lines, in order.
    pub extra_hosts: Vec<ExtraHost>,
}

/// A name that cannot go into `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hostname {name:?}: {reason}")]
pub struct HostnameError {
    pub name: String,
    pub reason: &'static str,
}

/// Checks a host name: dot-separated labels of ASCII letters, digits, `-` and `_` (the
/// underscore is outside RFC 1123 but common in service names), each 1-63 bytes and not
/// starting or ending with `-`, at most `max` bytes in all.
pub fn validate_hostname(name: &str, max: usize) -> Result<(), HostnameError> {
    let err = |reason| {
        Err(HostnameError {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return err("empty");
    }
    if name.len() > max {
        return err("too long");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return err("each dot-separated label must be 1-63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return err("only letters, digits, '-', '_' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return err("a label may not start or end with '-'");
        }
    }
    Ok(())
}

/// Renders `/etc/hosts`.
pub fn render_hosts(spec: &HostsSpec) -> Result<String, HostnameError> {
    validate_hostname(&spec.hostname, MAX_HOSTNAME_LEN)?;
    for extra in &spec.extra_hosts {
        validate_hostname(&extra.hostname, MAX_HOST_ALIAS_LEN)?;
    }
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    let own = spec.address.unwrap_or(Ipv4Addr::LOCALHOST);
    let _ = writeln!(out, "{own}\t{}", spec.hostname);
    for extra in &spec.extra_hosts {
        let _ = writeln!(out, "{}\t{}", extra.ip, extra.hostname);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full file for a bridge task with one extra host, byte for byte.
    #[test]
    fn renders() {
        let spec = HostsSpec {
            hostname: "web-1".into(),
            address: Some("10.213.9.2".parse().unwrap()),
            extra_hosts: vec![ExtraHost {
                hostname: "db.internal".into(),
                ip: "10.213.9.3".parse().unwrap(),
            }],
        };
        assert_eq!(
            render_hosts(&spec).unwrap(),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
             ff02::2\tip6-allrouters\n10.213.9.2\tweb-1\n10.213.9.3\tdb.internal\n"
        );
    }

    /// Without an address (`none` mode) the hostname maps to loopback; IPv6 extras print.
    #[test]
    fn none_mode_and_v6() {
        let spec = HostsSpec {
            hostname: "t".into(),
            address: None,
            extra_hosts: vec![ExtraHost {
                hostname: "v6".into(),
                ip: "fd00::1".parse().unwrap(),
            }],
        };
        let out = render_hosts(&spec).unwrap();
        assert!(out.ends_with("127.0.0.1\tt\nfd00::1\tv6\n"), "{out}");
    }

    /// Names that could inject lines, comments or aliases are refused.
    #[test]
    fn rejects_injection() {
        for bad in [
            "",
            "a b",
            "a\nb",
            "a#b",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a\tb",
            &"a".repeat(65),
        ] {
            let spec = HostsSpec {
                hostname: bad.into(),
                address: None,
                extra_hosts: vec![],
            };
            assert!(render_hosts(&spec).is_err(), "{bad:?}");
        }
        let spec = HostsSpec {
            hostname: "ok".into(),
            address: None,
            extra_hosts: vec![ExtraHost {
                hostname: "x\n1.2.3.4 evil".into(),
                ip: IpAddr::from([1, 1, 1, 1]),
            }],
        };
        assert_eq!(
            render_hosts(&spec),
            Err(HostnameError {
                name: "x\n1.2.3.4 evil".into(),
                reason: "only letters, digits, '-', '_' and '.' are allowed"
            })
        );
    }
}
