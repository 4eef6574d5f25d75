//! Names to addresses the way a container on berth finds its peers: an `A` query over
//! UDP to each nameserver of `/etc/resolv.conf` in turn (berth points it at the host's
//! resolver, which answers the Cloud Map namespaces). No libc resolver is involved,
//! so the static binaries need nothing from the image but themselves.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long one nameserver gets to answer.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no such name (NXDOMAIN)")]
    NotFound,
    #[error("the name has no addresses")]
    NoAddresses,
    #[error("the nameserver answered with error code {0}")]
    Server(u8),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("bad DNS answer: {0}")]
    Malformed(&'static str),
}

/// The addresses of `host`: itself if it is an address; else the `A` records from the
/// nameservers of `/etc/resolv.conf`; else (no resolv.conf) the system's lookup.
pub fn resolve(host: &str) -> Result<Vec<IpAddr>, ResolveError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let servers = std::fs::read_to_string("/etc/resolv.conf")
        .map(|c| nameservers(&c))
        .unwrap_or_default();
    if servers.is_empty() {
        let addrs = (host, 0).to_socket_addrs()?;
        return Ok(addrs.map(|a| a.ip()).collect());
    }
    let mut last = ResolveError::NoAddresses;
    for ns in servers {
        match ask(SocketAddr::new(ns, 53), host) {
            Ok(ips) if !ips.is_empty() => return Ok(ips),
            Ok(_) => last = ResolveError::NoAddresses,
            Err(ResolveError::NotFound) => return Err(ResolveError::NotFound),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The `nameserver` lines of a resolv.conf.
pub fn nameservers(conf: &str) -> Vec<IpAddr> {
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

fn ask(server: SocketAddr, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
    let sock = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    sock.set_read_timeout(Some(TIMEOUT))?;
    sock.connect(server)?;
    let id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(7, |d| d.subsec_nanos() as u16);
    sock.send(&query(id, host)?)?;
    let mut buf = [0u8; 1500];
    loop {
        let n = sock.recv(&mut buf)?;
        match answers(&buf[..n], id) {
            Err(ResolveError::Malformed("another query's id")) => continue,
            r => return r,
        }
    }
}

/// An `A` query for `host` with recursion desired.
pub fn query(id: u16, host: &str) -> Result<Vec<u8>, ResolveError> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in host.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(ResolveError::Malformed("bad name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

/// Skips a (possibly compressed) name at `i`; the offset after it.
fn skip_name(m: &[u8], mut i: usize) -> Result<usize, ResolveError> {
    loop {
        let len = *m.get(i).ok_or(ResolveError::Malformed("truncated name"))?;
        match len {
            0 => return Ok(i + 1),
            l if l & 0xC0 == 0xC0 => return Ok(i + 2),
            l => i += 1 + l as usize,
        }
    }
}

/// The IPv4 addresses of the `A` records in answer `m` to query `id`.
pub fn answers(m: &[u8], id: u16) -> Result<Vec<IpAddr>, ResolveError> {
    if m.len() < 12 {
        return Err(ResolveError::Malformed("short message"));
    }
    if u16::from_be_bytes([m[0], m[1]]) != id {
        return Err(ResolveError::Malformed("another query's id"));
    }
    match m[3] & 0x0F {
        0 => {}
        3 => return Err(ResolveError::NotFound),
        rc => return Err(ResolveError::Server(rc)),
    }
    let qd = u16::from_be_bytes([m[4], m[5]]);
    let an = u16::from_be_bytes([m[6], m[7]]);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(m, i)? + 4;
    }
    let mut ips = Vec::new();
    for _ in 0..an {
        i = skip_name(m, i)?;
        let rr = m
            .get(i..i + 10)
            .ok_or(ResolveError::Malformed("truncated record"))?;
        let (ty, len) = (
            u16::from_be_bytes([rr[0], rr[1]]),
            u16::from_be_bytes([rr[8], rr[9]]) as usize,
        );
        i += 10;
        let data = m
            .get(i..i + len)
            .ok_or(ResolveError::Malformed("truncated data"))?;
        if ty == 1 && len == 4 {
            ips.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            )));
        }
        i += len;
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let c = "search x\nnameserver 10.1.0.1\n# nameserver 9.9.9.9\nnameserver  ::1\nnameserver bad\n";
        assert_eq!(
            nameservers(c),
            vec![
                "10.1.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
    }

    /// A real answer: the query echoed, two A records (the second with a compressed
    /// owner name) and a CNAME that is skipped.
    #[test]
    fn parses_answers() {
        let mut m = query(9, "users.forum.local").unwrap();
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 3;
        let rec = |ty: u16, data: &[u8]| {
            let mut r = vec![0xC0, 12];
            r.extend_from_slice(&ty.to_be_bytes());
            r.extend_from_slice(&[0, 1, 0, 0, 0, 5]);
            r.extend_from_slice(&(data.len() as u16).to_be_bytes());
            r.extend_from_slice(data);
            r
        };
        m.extend(rec(1, &[10, 0, 0, 2]));
        m.extend(rec(5, &[1, b'x', 0]));
        m.extend(rec(1, &[10, 0, 0, 3]));
        assert_eq!(
            answers(&m, 9).unwrap(),
            vec![
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "10.0.0.3".parse().unwrap()
            ]
        );
        assert!(matches!(answers(&m, 8), Err(ResolveError::Malformed(_))));
        m[3] = 0x83;
        assert!(matches!(answers(&m, 9), Err(ResolveError::NotFound)));
        assert!(answers(&m[..20], 9).is_err());
    }

    #[test]
    fn addresses_are_themselves() {
        assert_eq!(
            resolve("10.2.3.4").unwrap(),
            vec!["10.2.3.4".parse::<IpAddr>().unwrap()]
        );
    }
}
