//! The task-facing resolver: a DNS forwarder on the node bridge's gateway, port 53, that
//! passes every query to the server's DNS (Cloud Map namespaces) and the answer back.
//!
//! Why a forwarder: `/etc/resolv.conf` cannot name a port, and the server's DNS listens
//! where the operator said (`--dns ADDR:PORT`), usually not reachable from a task's
//! namespace on port 53. Docker's embedded DNS (127.0.0.11) plays the same part. Tasks
//! get `nameserver <gateway>` first in their resolv.conf; the server answers REFUSED for
//! names outside its namespaces, and the resolver then asks the next name server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// The port tasks ask.
pub const DNS_PORT: u16 = 53;
/// How long the upstream has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest message forwarded (EDNS0 payloads stay well under this).
const MAX_MESSAGE: usize = 65_535;
/// Queries forwarded at once; more are dropped (the client retries).
const MAX_IN_FLIGHT: usize = 256;

/// Forwards one query to `upstream` over UDP and returns the answer.
async fn ask(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(upstream).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
        // An answer carries the query's id; anything else is not ours.
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// Serves UDP and TCP on `udp`/`tcp` until the process ends, forwarding to `upstream`.
pub async fn serve(udp: UdpSocket, tcp: TcpListener, upstream: SocketAddr) {
    let udp = Arc::new(udp);
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let tcp_limit = limit.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = tcp_limit.clone().try_acquire_owned() else {
                continue;
            };
            tokio::spawn(async move {
                let _permit = permit;
                // RFC 1035 4.2.2: two-byte length, then the message; several per connection.
                loop {
                    let mut len = [0u8; 2];
                    let read =
                        tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut len))
                            .await;
                    if !matches!(read, Ok(Ok(_))) {
                        return;
                    }
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    if conn.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    let Ok(a) = ask(upstream, &q).await else {
                        return;
                    };
                    let Ok(alen) = u16::try_from(a.len()) else {
                        return;
                    };
                    if conn.write_all(&alen.to_be_bytes()).await.is_err()
                        || conn.write_all(&a).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let Ok((n, from)) = udp.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            continue;
        };
        let q = buf[..n].to_vec();
        let udp = udp.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(a) = ask(upstream, &q).await {
                let _ = udp.send_to(&a, from).await;
            }
        });
    }
}

/// Binds the forwarder on `gateway:53` (UDP and TCP) and runs it in the background.
pub async fn start(gateway: std::net::IpAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let addr = SocketAddr::new(gateway, DNS_PORT);
    let udp = UdpSocket::bind(addr).await?;
    let tcp = TcpListener::bind(addr).await?;
    tokio::spawn(serve(udp, tcp, upstream));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers every query with the query's bytes and a marker.
    async fn upstream() -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let (n, from) = s.recv_from(&mut buf).await.unwrap();
                let mut a = buf[..n].to_vec();
                a.extend_from_slice(b"-answered");
                s.send_to(&a, from).await.unwrap();
            }
        });
        addr
    }

    /// UDP and TCP queries come back with the upstream's answer.
    #[tokio::test]
    async fn forwards_udp_and_tcp() {
        let up = upstream().await;
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (ua, ta) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        tokio::spawn(serve(udp, tcp, up));

        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(b"\x12\x34query", ua).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"\x12\x34query-answered");

        let mut t = tokio::net::TcpStream::connect(ta).await.unwrap();
        for id in [b"\x00\x01", b"\x00\x02"] {
            let q = [&id[..], b"q"].concat();
            t.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
            t.write_all(&q).await.unwrap();
            let mut len = [0u8; 2];
            t.read_exact(&mut len).await.unwrap();
            let mut a = vec![0u8; u16::from_be_bytes(len) as usize];
            t.read_exact(&mut a).await.unwrap();
            assert_eq!(a, [&q[..], b"-answered"].concat());
        }
    }
}
