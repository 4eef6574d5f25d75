//! `/etc/resolv.conf` content for a task (pure): the task definition's `dnsServers`,
//! `dnsSearchDomains` and resolver options, in resolv.conf(5) syntax.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::hosts::validate_hostname;

/// glibc reads at most this many `nameserver` lines (`MAXNS`, resolv.conf(5)).
pub const MAX_NAMESERVERS: usize = 3;
/// Longest search domain (RFC 1035 §2.3.4 less the trailing dot).
pub const MAX_SEARCH_DOMAIN_LEN: usize = 253;

/// What goes into a task's `/etc/resolv.conf`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvSpec {
    /// Name servers, in order of preference (at most [`MAX_NAMESERVERS`]).
    pub nameservers: Vec<IpAddr>,
    /// Search domains, in order.
    pub search: Vec<String>,
    /// Resolver options, e.g. `ndots:2`, `timeout:1`, `rotate`.
    pub options: Vec<String>,
}

/// Why a resolver configuration cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolvError {
    #[error("{0} name servers given; resolvers read at most {MAX_NAMESERVERS}")]
    TooManyNameservers(usize),
    #[error("invalid search domain {0:?}")]
    BadSearchDomain(String),
    #[error("invalid resolver option {0:?}")]
    BadOption(String),
}

/// Renders `/etc/resolv.conf`.
pub fn render_resolv_conf(spec: &ResolvSpec) -> Result<String, ResolvError> {
    if spec.nameservers.len() > MAX_NAMESERVERS {
        return Err(ResolvError::TooManyNameservers(spec.nameservers.len()));
    }
    for d in &spec.search {
        validate_hostname(d, MAX_SEARCH_DOMAIN_LEN)
            .map_err(|_| ResolvError::BadSearchDomain(d.clone()))?;
    }
    for o in &spec.options {
        // Options are words like `ndots:5` or `no-aaaa`; anything else could add a line.
        let ok = !o.is_empty()
            && o.len() <= 64
            && o.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.'));
        if !ok {
            return Err(ResolvError::BadOption(o.clone()));
        }
    }
    let mut out = String::new();
    for ns in &spec.nameservers {
        let _ = writeln!(out, "nameserver {ns}");
    }
    if !spec.search.is_empty() {
        let _ = writeln!(out, "search {}", spec.search.join(" "));
    }
    if !spec.options.is_empty() {
        let _ = writeln!(out, "options {}", spec.options.join(" "));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All three sections, in resolv.conf(5) syntax.
    #[test]
    fn renders() {
        let spec = ResolvSpec {
            nameservers: vec!["10.213.9.1".parse().unwrap(), "fd00::53".parse().unwrap()],
            search: vec!["svc.local".into(), "local".into()],
            options: vec!["ndots:2".into(), "rotate".into()],
        };
        assert_eq!(
            render_resolv_conf(&spec).unwrap(),
            "nameserver 10.213.9.1\nnameserver fd00::53\nsearch svc.local local\noptions ndots:2 rotate\n"
        );
        assert_eq!(render_resolv_conf(&ResolvSpec::default()).unwrap(), "");
    }

    /// Too many servers, bad domains and bad options are refused.
    #[test]
    fn rejects() {
        let ns: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            render_resolv_conf(&ResolvSpec {
                nameservers: vec![ns; 4],
                ..Default::default()
            }),
            Err(ResolvError::TooManyNameservers(4))
        );
        assert_eq!(
            render_resolv_conf(&ResolvSpec {
                search: vec!["a b".into()],
                ..Default::default()
            }),
            Err(ResolvError::BadSearchDomain("a b".into()))
        );
        for bad in ["", "nd ots", "x\nnameserver 1.1.1.1", "#"] {
            assert_eq!(
                render_resolv_conf(&ResolvSpec {
                    options: vec![bad.into()],
                    ..Default::default()
                }),
                Err(ResolvError::BadOption(bad.into()))
            );
        }
    }
}
